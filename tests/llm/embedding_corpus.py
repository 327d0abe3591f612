"""Real text for the embedding quality check: the repository's own documentation (a frozen copy), chunked by
the real chunker (with the heading path prepended, as ingestion embeds it), a question derived from each chunk
(a sentence from its middle) and a few written ones. Shared by tests/llm/test_embeddings.py and
bench/embedding_quality.py.

`labelled_questions` is the retrieval task itself: sentences from the part of each chunk the model reads, each
with the chunks that contain it (its answer), so a build is judged by whether it finds the right chunk, not only
by whether it finds what fp32 finds."""

import re
from pathlib import Path

import numpy as np

# A snapshot of the repository's documentation (README.md, deploy/README.md, deploy/ARCHITECTURE.md as of
# 2026-12-01): the gates compare builds on it with small margins (a 0.01 change in recall is about three
# questions), so editing the live docs must not move them.
ROOT = Path(__file__).resolve().parent / "embedding_corpus_texts"
DOCUMENTS = ["README.md", "deploy-README.md", "deploy-ARCHITECTURE.md"]
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
    from documents.ingestion import _embedding_input

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


def labelled_questions(passages: list[str], per_passage: int = 3) -> list[tuple[str, set[int]]]:
    """(question, indices of the passages that contain it): up to `per_passage` sentences from the first
    MAX_TOKENS tokens of each passage (the model never sees the rest, full-text search finds that), spread
    across them; a sentence found in several chunks (the chunker's overlap) is answered by any of them."""
    from tokenizers import Tokenizer

    from saas.llm.embeddings import MAX_TOKENS, model_dir

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    labelled: dict[str, set[int]] = {}
    for passage in passages:
        read = passage[: max(end for _, end in tokenizer.encode(passage).offsets)]
        body = read.split("\n", 1)[-1]
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", body) if 30 < len(s.strip()) < 300]
        sentences = [s for s in sentences if s in read and s[-1] in ".!?"]  # whole sentences only
        step = max(1, len(sentences) // per_passage)
        for sentence in sentences[::step][:per_passage]:
            labelled.setdefault(sentence, set())
    for sentence, sources in labelled.items():
        sources.update(i for i, passage in enumerate(passages) if sentence in passage)
    return list(labelled.items())


def task_recall(questions: np.ndarray, passages: np.ndarray, answers: list[set[int]], k: int) -> float:
    """The share of questions whose answer (any chunk that holds it) is among their top k passages."""
    found = top_k(questions, passages, k)
    return float(np.mean([bool(answer & set(row)) for answer, row in zip(answers, found, strict=True)]))


def top_k(questions: np.ndarray, passages: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-(questions @ passages.T), axis=1, kind="stable")[:, :k]


def recall_at(reference: np.ndarray, found: np.ndarray) -> float:
    """Recall@k of `found` against `reference`'s top k (fp32's results are the truth)."""
    k = reference.shape[1]
    return float(np.mean([len(set(r) & set(f)) / k for r, f in zip(reference, found, strict=True)]))
