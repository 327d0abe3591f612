"""Ingestion throughput with each way of embedding passages, side by side and interleaved in one run: before
(the fp32 ONNX file, as questions are embedded), now (its int8 build, `LOCAL_EMBEDDING_PASSAGES=int8`), and with
`--sides torch,fp32,int8` also the first path (sentence-transformers fp32 in PyTorch, behind one lock).

Each round, in rotating order, each side: ingests generated Markdown documents through the real pipeline
(`documents.ingestion.document_ingest`: read the stored file, extract, chunk with the model's tokenizer, embed
in batches through the gateway with its ledger rows, encrypt, insert, full-text vectors), embeds exactly the
same chunk texts with its bare model, and embeds short questions from 8 threads while a 256-passage batch runs
(what a web process sees: every question waited on the old lock). Prints chunks per second, this process's CPU
per chunk (all its threads; it holds better than wall-clock on a shared machine), question latency, and the load
average; medians over the rounds.

    python bench/ingest.py [--documents 8] [--sections 60] [--rounds 3] [--sides fp32,int8]
"""

import argparse
import os
import random
import statistics
import threading
import time

from stack import bench_stack

WORDS = [
    "customer",
    "invoice",
    "refund",
    "policy",
    "travel",
    "expense",
    "contract",
    "renewal",
    "onboarding",
    "security",
    "incident",
    "report",
    "quarter",
    "revenue",
    "forecast",
    "hiring",
    "plan",
    "office",
    "parking",
    "holiday",
    "schedule",
    "vendor",
    "payment",
    "approval",
    "budget",
    "review",
    "team",
    "meeting",
    "roadmap",
    "feature",
    "release",
    "support",
    "ticket",
    "escalation",
    "training",
    "compliance",
    "audit",
    "privacy",
    "data",
    "retention",
]


def document_text(rng: random.Random, sections: int) -> str:
    parts = []
    for s in range(sections):
        parts.append(f"## Section {s}: {rng.choice(WORDS).title()} {rng.choice(WORDS)}")
        for _ in range(rng.randint(2, 5)):
            sentences = [
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "."
                for _ in range(rng.randint(3, 7))
            ]
            parts.append(" ".join(sentences))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--sections", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sides", default="fp32,int8", help=f"of {','.join(SIDES)}")
    args = parser.parse_args()

    with bench_stack():
        run(args.documents, args.sections, args.rounds, [SIDES[side] for side in args.sides.split(",")])


SIDES = {  # name: (label, LOCAL_EMBEDDING_BACKEND, LOCAL_EMBEDDING_PASSAGES)
    "torch": ("first: fp32 PyTorch, one lock", "torch", "fp32"),
    "fp32": ("before: fp32 ONNX passages", "onnx", "fp32"),
    "int8": ("now: int8 ONNX passages", "onnx", "int8"),
}


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(documents: int, sections: int, rounds: int, sides: list[tuple[str, str, str]]) -> None:
    from accounts.models import Organization
    from documents import ingestion, services
    from documents.models import Chunk, Document
    from saas.core.tenancy import org_scope
    from saas.llm import embeddings

    org, _ = Organization.objects.get_or_create(slug="bench-ingest", defaults={"name": "Bench ingest"})
    rng = random.Random(11)  # noqa: S311  (made-up text, not secrets)
    sources = [document_text(rng, sections).encode() for _ in range(documents)]
    for _, backend, passages in sides:  # load every model before any clock starts
        embeddings.BACKEND, embeddings.PASSAGES = backend, passages
        embeddings.embed_local(["warm up"])
        embeddings.embed_local(["warm up"], passages=True)
    load_before = _load()

    def pipeline() -> tuple[float, float, list[str]]:
        Document.all_orgs.filter(organization=org).delete()
        uploaded = [
            services.document_upload(org=org, data=data, filename=f"doc{i}.md") for i, data in enumerate(sources)
        ]
        with org_scope(org):
            wall, cpu = time.perf_counter(), time.process_time()
            for document in uploaded:
                ingestion.document_ingest(org_id=org.pk, document_id=document.pk)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            chunks = list(Chunk.objects.for_org(org).order_by("document_id", "position"))
        assert all(d.status == "ready" for d in Document.all_orgs.filter(organization=org)), "an ingestion failed"
        return wall, cpu, [ingestion._embedding_input(c.heading, services.chunk_text(c)) for c in chunks]

    def bare(texts: list[str]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        embeddings._model(passages=True).encode(texts)
        return time.perf_counter() - wall, time.process_time() - cpu

    def questions_during_a_batch(texts: list[str]) -> list[float]:
        """Latency (ms) of single-question embeds from 8 threads while another thread embeds 256 passages."""
        latencies: list[float] = []
        begun, done = threading.Event(), threading.Event()

        def batch() -> None:
            begun.set()
            embeddings.embed_local(texts[:256], passages=True)
            done.set()

        def asker(n: int) -> None:
            begun.wait()
            while not done.is_set():
                started = time.perf_counter()
                embeddings.embed_local([f"How long do refunds take for order {n}?"])
                latencies.append((time.perf_counter() - started) * 1000)

        threads = [threading.Thread(target=batch)] + [threading.Thread(target=asker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return latencies

    results: dict[str, dict[str, list[float]]] = {name: {} for name, _, _ in sides}
    count = 0
    for round_ in range(rounds):
        order = sides[round_ % len(sides) :] + sides[: round_ % len(sides)]
        for name, backend, passages in order:
            embeddings.BACKEND, embeddings.PASSAGES = backend, passages
            wall, cpu, texts = pipeline()
            count = len(texts)
            bare_wall, bare_cpu = bare(texts)
            asked = questions_during_a_batch(texts)
            side = results[name]
            for key, value in [("pipeline", count / wall), ("pipeline_cpu", cpu / count * 1000),
                               ("bare", count / bare_wall), ("bare_cpu", bare_cpu / count * 1000),
                               ("q50", statistics.median(asked)), ("q95", _p95(asked)), ("qn", len(asked))]:  # fmt: skip
                side.setdefault(key, []).append(value)
    embeddings.BACKEND, embeddings.PASSAGES = "onnx", "int8"
    load_after = _load()

    med = {name: {key: statistics.median(values) for key, values in side.items()} for name, side in results.items()}
    names = [name for name, _, _ in sides]
    print(f"\nIngestion, {documents} Markdown documents, {count} chunks, {rounds} interleaved rounds (medians)")
    print(f"load average {load_before} -> {load_after} on {os.cpu_count()} cores\n")
    print(f"{'':<46}" + "".join(f"{n:>34}" for n in names))
    rows: list[tuple[str, str | None, str]] = [
        ("pipeline chunks/s", "pipeline", "{:.1f}"),
        ("pipeline CPU ms per chunk (this process)", "pipeline_cpu", "{:.1f}"),
        ("bare model chunks/s", "bare", "{:.1f}"),
        ("bare model CPU ms per chunk", "bare_cpu", "{:.1f}"),
        ("pipeline / bare model", None, "{:.0%}"),
        ("question embed during a batch p50 ms", "q50", "{:.0f}"),
        ("question embed during a batch p95 ms", "q95", "{:.0f}"),
        ("questions answered during the batch", "qn", "{:.0f}"),
    ]
    for label, row_key, fmt in rows:
        values = [med[n]["pipeline"] / med[n]["bare"] if row_key is None else med[n][row_key] for n in names]
        print(f"{label:<46}" + "".join(f"{fmt.format(v):>34}" for v in values))
    old, new = med[names[-2]], med[names[-1]]
    print(f"\n{names[-1].split(':')[0]} / {names[-2].split(':')[0]}: pipeline {new['pipeline'] / old['pipeline']:.2f}x chunks/s, "
          f"bare model {new['bare'] / old['bare']:.2f}x, CPU per chunk {new['bare_cpu'] / old['bare_cpu']:.2f}x")  # fmt: skip


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")


if __name__ == "__main__":
    main()
