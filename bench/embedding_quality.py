"""Why the shipped local embedding model is ONNX fp32 and not int8: recall@10 against the fp32 model's own
results on real text (this repository's documentation chunked by the real chunker, a question derived from each
chunk and a few written ones: tests/llm/embedding_corpus.py), the worst cosine to fp32's vectors, and CPU per
passage (one thread), for the shipped file and three dynamic int8 builds of it (onnxruntime.quantization).

The gate: ship a quantised build only if its recall@10 against fp32 is >= 0.99. "mixed" is the questions of
the build against passages stored by fp32 (what a model change would do to chunks embedded before it).

    python bench/embedding_quality.py
"""

import os
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def main() -> None:
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.test")
    import django

    django.setup()
    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from saas.llm import embeddings
    from tests.llm.embedding_corpus import corpus, recall_at, top_k

    passages, questions = corpus()
    reference = embeddings.TorchEncoder()
    ref_p, ref_q = reference.encode(passages), reference.encode(questions)
    truth = top_k(ref_q, ref_p)
    shipped = embeddings.ensure_exported()
    names = [n.name for n in onnx.load(str(shipped)).graph.node if n.op_type == "MatMul"]
    ffn = [n for n in names if "/output/dense" in n and "attention" not in n]  # the feed-forward down projection
    intermediate = [n for n in names if "/intermediate/" in n]

    with tempfile.TemporaryDirectory() as tmp:
        builds = [("ONNX fp32 (shipped)", shipped)]
        for label, exclude in [
            ("int8, every MatMul (per channel)", []),
            ("int8, feed-forward output kept fp32", ffn),
            ("int8, attention projections only", ffn + intermediate),
        ]:
            target = Path(tmp) / f"{len(builds)}.onnx"
            quantize_dynamic(str(shipped), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude)  # fmt: skip
            builds.append((label, target))

        print(f"\n{len(passages)} passages, {len(questions)} questions; load average {os.getloadavg()[0]:.1f}\n")
        print(f"{'build':<40}{'recall@10 vs fp32':>18}{'mixed':>8}{'min cosine':>12}{'CPU ms/passage':>16}{'MB':>6}")
        for label, path in builds:
            encoder = embeddings.OnnxEncoder(path)
            encoder.encode(passages[:4])
            started = time.process_time()
            got_p = np.empty_like(ref_p)
            for start in range(0, len(passages), embeddings.EMBED_BATCH):  # one thread: CPU is comparable
                got_p[start : start + embeddings.EMBED_BATCH] = encoder._run(
                    passages[start : start + embeddings.EMBED_BATCH]
                )
            cpu = (time.process_time() - started) / len(passages) * 1000
            got_q = encoder.encode(questions)
            recall, mixed = recall_at(truth, top_k(got_q, got_p)), recall_at(truth, top_k(got_q, ref_p))
            cosine = float(np.min(np.sum(got_p * ref_p, axis=1)))
            size = path.stat().st_size / 1e6
            print(f"{label:<40}{recall:>18.4f}{mixed:>8.4f}{cosine:>12.5f}{cpu:>16.1f}{size:>6.0f}")


if __name__ == "__main__":
    main()
