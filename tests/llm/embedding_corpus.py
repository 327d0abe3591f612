"""Real text for the embedding quality check: the repository's own documentation, chunked by the real chunker
(with the heading path prepended, as ingestion embeds it), a question derived from each chunk (a sentence from
its middle) and a few written ones. Shared by tests/llm/test_embeddings.py and bench/embedding_quality.py."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md", "deploy/README.md", "deploy/ARCHITECTURE.md"]
WRITTEN_QUESTIONS = [
    "How long do refunds take?",
    "What happens when a Celery worker is killed in the middle of an ingestion?",
    "Which embedding model is used for documents and how many dimensions does it have?",
    "How do I rotate an API key?",
    "What are the rate limits of the embeddings endpoint?",
    "How is personal data erased when a member asks for it?",
    "Which files can be uploaded and what is the size limit?",
    "How are answers cached per organisation?",
    "How does the gateway choose a provider when one is down?",
    "What does the crew engine record for each step?",
    "How many replicas of the ingestion worker run in Kubernetes?",
    "How is the HNSW index tuned for recall at a million chunks?",
]


def corpus() -> tuple[list[str], list[str]]:
    """(passages, questions)."""
    from documents.extraction import chunk_sections, extract_sections
    from documents.services import _embedding_input

    passages = []
    for name in DOCUMENTS:
        sections, _ = extract_sections("markdown", (ROOT / name).read_bytes())
        passages += [_embedding_input(piece.heading, piece.text) for piece in chunk_sections(sections)]
    questions = list(WRITTEN_QUESTIONS)
    for passage in passages:
        body = passage.split("\n", 1)[-1]
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", body) if 30 < len(s.strip()) < 300]
        if sentences:
            questions.append(sentences[len(sentences) // 2])
    return passages, questions


def top_k(questions: np.ndarray, passages: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-(questions @ passages.T), axis=1, kind="stable")[:, :k]


def recall_at(reference: np.ndarray, found: np.ndarray) -> float:
    """Recall@k of `found` against `reference`'s top k (fp32's results are the truth)."""
    k = reference.shape[1]
    return float(np.mean([len(set(r) & set(f)) / k for r, f in zip(reference, found, strict=True)]))
