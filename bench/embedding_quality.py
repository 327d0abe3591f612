"""Which build of the local embedding model to ship: full-precision and int8 builds of all-MiniLM-L6-v2 on real
text (this repository's documentation chunked by the real chunker: tests/llm/embedding_corpus.py), judged two ways.

- **Overlap with fp32**: recall@10 against the fp32 model's own top 10, for the corpus' questions (a sentence
  derived from each chunk and a few written ones). Catches any change at all in what is retrieved.
- **Task recall**: for each labelled question (a sentence from the part of a chunk the model reads), is its
  chunk in the top 10 / the top 1? This is the issue's "retrieval recall": a build may rank differently from
  fp32 and still find the answer as often.

Each is given for three pairings: the build for questions and passages ("same"), the build's questions against
passages stored by fp32 ("mixed": what switching the model does to chunks embedded before), and fp32 questions
against passages embedded by the build ("passages only": the build used for ingestion only). CPU per passage is
one thread, batches of 16, the builds interleaved batch by batch (thread CPU time, which holds better than
wall-clock on a shared machine), with its ratio to the shipped fp32 file.

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
    import logging

    logging.disable(logging.WARNING)  # the quantiser and the optimizer log every tensor
    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from saas.llm import embeddings
    from tests.llm.embedding_corpus import corpus, labelled_questions, recall_at, task_recall, top_k

    passages, questions = corpus()
    labelled = labelled_questions(passages)
    asked, answers = [q for q, _ in labelled], [a for _, a in labelled]
    shipped, int8 = embeddings.ensure_exported("fp32"), embeddings.ensure_exported("int8")
    names = [n.name for n in onnx.load(str(shipped)).graph.node if n.op_type == "MatMul"]
    ffn = [n for n in names if "/output/dense" in n and "attention" not in n]  # the feed-forward down projection
    intermediate = [n for n in names if "/intermediate/" in n]

    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"  # ONNX Runtime's transformer fusions, still fp32
        optimize_model(str(shipped), model_type="bert", num_heads=12, hidden_size=embeddings.DIMENSIONS,
                       opt_level=0).save_model_to_file(str(fused))  # fmt: skip
        builds = [("fp32 (questions)", shipped), ("fp32 fused attention/LayerNorm/GELU", fused),
                  ("int8, every MatMul (passages)", int8)]  # fmt: skip
        for label, source, options in [
            ("int8, feed-forward output kept fp32", shipped, {"op_types_to_quantize": ["MatMul"], "nodes_to_exclude": ffn}),
            ("int8, attention projections only", shipped,
             {"op_types_to_quantize": ["MatMul"], "nodes_to_exclude": ffn + intermediate}),
            ("int8 fused, every MatMul + attention", fused, {}),
            ("int8 fused, every MatMul", fused, {"op_types_to_quantize": ["MatMul"]}),
        ]:  # fmt: skip
            target = Path(tmp) / f"{len(builds)}.onnx"
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **options)  # fmt: skip
            builds.append((label, target))

        encoders = [embeddings.OnnxEncoder(path) for _, path in builds]
        cpu = [0.0] * len(builds)
        vectors = [np.empty((len(passages), embeddings.DIMENSIONS), dtype=np.float32) for _ in builds]
        load_before = os.getloadavg()
        for n, start in enumerate(range(0, len(passages), embeddings.EMBED_BATCH)):  # interleaved, rotating
            batch = passages[start : start + embeddings.EMBED_BATCH]
            for i in [(n + j) % len(builds) for j in range(len(builds))]:
                started = time.thread_time()
                vectors[i][start : start + len(batch)] = encoders[i]._run(batch)
                cpu[i] += time.thread_time() - started
        load_after = os.getloadavg()
        ref_p, ref_q, ref_a = vectors[0], encoders[0].encode(questions), encoders[0].encode(asked)
        truth = top_k(ref_q, ref_p)

        print(f"\n{len(passages)} passages, {len(questions)} questions for the overlap, {len(asked)} labelled questions "
              f"for the task; load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
        print("\nOverlap with fp32's top 10, the worst cosine to fp32's passage vectors, CPU per passage (one thread)")
        head = ["same", "mixed", "passages only", "min cosine", "CPU ms/passage", "vs shipped", "MB"]
        print(f"{'build':<40}" + "".join(f"{h:>15}" for h in head))
        rows = []
        for (label, path), encoder, got_p, seconds in zip(builds, encoders, vectors, cpu, strict=True):
            got_q, got_a = encoder.encode(questions), encoder.encode(asked)
            overlap = [recall_at(truth, top_k(got_q, got_p)), recall_at(truth, top_k(got_q, ref_p)),
                       recall_at(truth, top_k(ref_q, got_p))]  # fmt: skip
            cosine = float(np.min(np.sum(got_p * ref_p, axis=1)))
            ms = seconds / len(passages) * 1000
            cells = [*(f"{v:.3f}" for v in overlap), f"{cosine:.5f}", f"{ms:.1f}", f"{seconds / cpu[0]:.2f}x",
                     f"{path.stat().st_size / 1e6:.0f}"]  # fmt: skip
            print(f"{label:<40}" + "".join(f"{c:>15}" for c in cells))
            rows.append((label, [task_recall(q, p, answers, k) for q, p in
                                 [(got_a, got_p), (got_a, ref_p), (ref_a, got_p)] for k in (10, 1)]))  # fmt: skip
        print("\nTask recall: the labelled question's chunk in the top 10 / top 1 (difference to fp32)")
        head = ["same @10", "@1", "mixed @10", "@1", "passages @10", "@1"]
        print(f"{'build':<40}" + "".join(f"{h:>15}" for h in head))
        base = rows[0][1]
        for label, values in rows:
            cells = [
                f"{v:.3f}" if values is base else f"{v:.3f} ({v - b:+.3f})" for v, b in zip(values, base, strict=True)
            ]
            print(f"{label:<40}" + "".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
