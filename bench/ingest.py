"""Ingestion throughput against the raw embedding model, side by side in one run.

Ingests generated Markdown documents through the real pipeline (`documents.services.document_ingest`: read
the stored file, extract, chunk with the model's tokenizer, embed in batches through the gateway with its
ledger rows, encrypt, insert, full-text vectors) and then embeds exactly the same chunk texts with the bare
model (sentence-transformers at the batch size the gateway's local embedder uses). Prints chunks per second of both and their ratio.

    python bench/ingest.py [--documents 8] [--sections 60]
"""

import argparse
import random
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
    args = parser.parse_args()

    with bench_stack():
        run(args.documents, args.sections)


def run(documents: int, sections: int) -> None:
    from accounts.models import Organization
    from documents import services
    from documents.models import Chunk, Document
    from saas.core.tenancy import org_scope
    from saas.llm.embeddings import EMBED_BATCH, _model, embed_local

    org, _ = Organization.objects.get_or_create(slug="bench-ingest", defaults={"name": "Bench ingest"})
    Document.all_orgs.filter(organization=org).delete()
    embed_local(["warm up"])  # load the model before either clock starts
    rng = random.Random(11)  # noqa: S311  (made-up text, not secrets)
    uploaded = [
        services.document_upload(org=org, data=document_text(rng, sections).encode(), filename=f"doc{i}.md")
        for i in range(documents)
    ]
    with org_scope(org):
        started = time.perf_counter()
        for document in uploaded:
            services.document_ingest(org_id=org.pk, document_id=document.pk)
        pipeline_seconds = time.perf_counter() - started
        chunks = list(Chunk.objects.for_org(org).order_by("document_id", "position"))
    assert all(d.status == "ready" for d in Document.all_orgs.filter(organization=org)), "an ingestion failed"
    texts = [services._embedding_input(c.heading, services.chunk_text(c)) for c in chunks]
    started = time.perf_counter()
    _model().encode(texts, normalize_embeddings=True, batch_size=EMBED_BATCH, show_progress_bar=False)
    raw_seconds = time.perf_counter() - started

    pipeline_rate, raw_rate = len(chunks) / pipeline_seconds, len(chunks) / raw_seconds
    print(f"\nIngestion, {documents} Markdown documents, {len(chunks)} chunks (chunks/s)\n")
    print(f"{'ours: the whole pipeline':<44}{pipeline_rate:>10.1f}")
    print(f"{'baseline: the bare embedding model':<44}{raw_rate:>10.1f}")
    print(f"{'pipeline / model':<44}{pipeline_rate / raw_rate:>10.0%}")


if __name__ == "__main__":
    main()
