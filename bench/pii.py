# ruff: noqa: RUF001  (the prompts use look-alike characters on purpose)
"""What PII masking costs per call on the gateway's hot path: the module before #14 and the current one, side
by side in one run, on typical prompts (each is masked as one message, the way the gateway masks a request).

The old module is read from git (`git show bd401bb:saas/llm/pii.py`) into a temporary module. Each prompt is
timed over many rounds, old and new interleaved, and the median per call is printed in microseconds, with how
many values each version masked. The new module runs with the server's default regions (US, GB, DE, FR) and
once more with person names switched on.

    python bench/pii.py [--rounds 300] [--old-commit bd401bb]
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.test")

LOREM = (
    "Our quarterly report covers revenue, churn and the roadmap for the next two releases. The team shipped "
    "the new onboarding flow, fixed the flaky export job and reduced p95 latency from 840 ms to 310 ms. "
)
CODE = """def handler(event):
    for i, row in enumerate(rows[::2]):
        if row["version"] >= "2.10.1" and row.get("ts", 0) > 1732982400:
            log.info("row %s at 12:30:45 ok", i)
    return {"status": 200, "items": len(rows)}
"""
PROMPTS = {
    "short question (60 chars)": "What is the difference between a mutex and a semaphore?",
    "paragraph, no PII (400 chars)": LOREM * 2,
    "support email with PII (600 chars)": (
        "Dear Mr. Tanaka,\nmy card 4111 1111 1111 1111 was charged twice on 2024-03-05 (order 1234567890). "
        "Please call me on (415) 555-2671 or +44 20 7946 0958, or write to ann.lee@example.com. The refund "
        "should go to IBAN DE89 3704 0044 0532 0130 00. My router is 192.168.1.23 / 2001:db8::1.\n"
        "Kind regards,\nAnna Lee\n" + LOREM
    ),
    "code snippet (300 chars)": CODE,
    "long document, few numbers (8,000 chars)": LOREM * 40,
    "non-ASCII text with PII (500 chars)": (
        "Bonjour, je m'appelle Élodie Dubois. Mon numéro : 06 12 34 56 78, ma carte ４１１１ １１１１ １１１１ "
        "１１１１, mon e-mail josé@bücher.de. Réunion le 15.01.2024 à 10:30, prix 1.234,56 €. "
        + "Ça marche très bien. "
        * 10
    ),
}


def load_old(commit: str) -> object:
    source = subprocess.run(
        ["git", "show", f"{commit}:saas/llm/pii.py"], cwd=BASE_DIR, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "pii_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pii_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_call_us(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--old-commit", default="bd401bb")
    args = parser.parse_args()

    import django

    django.setup()
    from saas.llm.pii import Masker, Options

    old = load_old(args.old_commit)
    regions = Options().regions
    print(f"PII masking per call, median of {args.rounds} rounds (µs); new regions: {', '.join(regions)}\n")
    header = f"{'prompt':<42} {'old':>9} {'new':>9} {'new+names':>10}   masked old/new/new+names"
    print(header)
    print("-" * len(header))
    for label, text in PROMPTS.items():
        runs = {
            "old": lambda t=text: old.Masker().mask(t),  # type: ignore[attr-defined]
            "new": lambda t=text: Masker(Options()).mask(t),
            "names": lambda t=text: Masker(Options(names=True)).mask(t),
        }
        for fn in runs.values():  # warm caches (compiled patterns, phonenumbers metadata) before timing
            fn()
        timings: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(5):  # interleaved, so that machine noise hits each version alike
            for name, fn in runs.items():
                timings[name].append(per_call_us(fn, max(1, args.rounds // 5)))
        found = []
        for masker in (old.Masker(), Masker(Options()), Masker(Options(names=True))):  # type: ignore[attr-defined]
            masker.mask(text)
            found.append(str(masker.found))
        t = {name: statistics.median(values) for name, values in timings.items()}
        print(f"{label:<42} {t['old']:>9.1f} {t['new']:>9.1f} {t['names']:>10.1f}   {'/'.join(found)}")


if __name__ == "__main__":
    main()
