"""The local embedding model on ONNX Runtime: the same vectors as the fp32 sentence-transformers model on real
text (the shipped file must not drift), the int8 passage build finding the right chunks as often as fp32,
inference without a global lock, the async variant on its own threads, and one load per Celery worker, in the
parent before the prefork children fork."""

import asyncio
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from saas.llm import embeddings
from tests.conftest import BIN_DIR, start_process, subprocess_env, wait_until
from tests.llm.embedding_corpus import corpus, labelled_questions, recall_at, task_recall, top_k


@pytest.fixture(scope="module")
def reference_and_shipped():
    """The fp32 PyTorch model's vectors and the shipped model's, for the same passages and questions."""
    passages, questions = corpus()
    reference = embeddings.TorchEncoder()
    shipped = embeddings._model()
    return (
        (reference.encode(passages), reference.encode(questions)),
        (shipped.encode(passages), shipped.encode(questions)),
        len(passages),
    )


def test_the_shipped_model_is_onnx_and_finds_what_fp32_finds(reference_and_shipped):
    """The quality gate: recall@10 against fp32's results within 0.01 (the int8 build scored 0.91 here, which
    is why it is not shipped); the vectors themselves are fp32's, so chunks embedded before stay comparable."""
    (ref_passages, ref_questions), (passages, questions), count = reference_and_shipped
    assert embeddings.BACKEND == "onnx" and isinstance(embeddings._model(), embeddings.OnnxEncoder)
    assert count >= 100 and passages.shape == (count, embeddings.DIMENSIONS) == ref_passages.shape
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    assert recall_at(top_k(ref_questions, ref_passages), top_k(questions, passages)) >= 0.99
    # Mixed: questions from the shipped model against chunks stored by the old one.
    assert recall_at(top_k(ref_questions, ref_passages), top_k(questions, ref_passages)) >= 0.99
    cosines = np.sum(passages * ref_passages, axis=1)
    assert cosines.min() >= 0.9999, cosines.min()


def test_the_int8_passage_build_finds_the_right_chunks_as_often_as_fp32():
    """The gate for ingestion's int8 build (the issue's "retrieval recall within 0.01"): fp32 questions (what
    search embeds) against passages embedded by each build; a labelled question's answer is the chunk it was
    taken from. Its ranking is not fp32's (overlap with fp32's top 10 about 0.93), so the overlap is only
    bounded from below, against a build gone wrong."""
    passages, _ = corpus()
    labelled = labelled_questions(passages)
    assert len(labelled) >= 200
    questions, answers = [q for q, _ in labelled], [a for _, a in labelled]
    fp32, int8 = embeddings._model(), embeddings._model(passages=True)
    assert embeddings.PASSAGES == "int8" and int8 is not fp32 and "int8" in int8.session._model_path
    asked, stored_fp32, stored_int8 = fp32.encode(questions), fp32.encode(passages), int8.encode(passages)
    assert np.allclose(np.linalg.norm(stored_int8, axis=1), 1.0, atol=1e-5)
    for k in (10, 1):
        before, after = task_recall(asked, stored_fp32, answers, k), task_recall(asked, stored_int8, answers, k)
        assert after >= before - 0.01, (k, before, after)
    assert recall_at(top_k(asked, stored_fp32), top_k(asked, stored_int8)) >= 0.85
    assert 0.97 <= np.sum(stored_int8 * stored_fp32, axis=1).min() < 0.9999  # int8 indeed, and close


def test_passages_use_the_int8_build_and_everything_else_fp32(monkeypatch):
    text = ["Refunds take 30 days from the purchase."]
    fp32, int8 = (embeddings._model().encode(text)[0], embeddings._model(passages=True).encode(text)[0])
    assert np.allclose(embeddings.embed_local(text)[0], fp32, atol=1e-6)
    assert np.allclose(embeddings.embed_local(text, passages=True)[0], int8, atol=1e-6)
    with embeddings.for_passages():
        assert np.allclose(embeddings.embed_local(text)[0], int8, atol=1e-6)
    assert np.allclose(embeddings.embed_local(text)[0], fp32, atol=1e-6)  # only inside the block
    monkeypatch.setattr(embeddings, "PASSAGES", "fp32")  # LOCAL_EMBEDDING_PASSAGES=fp32
    assert np.allclose(embeddings.embed_local(text, passages=True)[0], fp32, atol=1e-6)


def test_embed_local_keeps_order_across_batches_and_lengths():
    texts = [("word " * (n % 37)) + f"text number {n}" for n in range(3 * embeddings.EMBED_BATCH + 5)]
    together = np.array(embeddings.embed_local(texts))
    alone = np.array([embeddings.embed_local([t])[0] for t in texts[:: embeddings.EMBED_BATCH]])
    assert together.shape == (len(texts), embeddings.DIMENSIONS)
    assert np.allclose(together[:: embeddings.EMBED_BATCH], alone, atol=1e-5)  # padding does not leak in
    assert embeddings.embed_local([]) == []


def test_two_threads_run_the_model_at_the_same_time(monkeypatch):
    """No global lock: both forward passes are inside the session at once (with the old lock the second never
    got in and the barrier broke)."""
    monkeypatch.setenv("LOCAL_EMBEDDING_THREADS", "2")
    encoder = embeddings._model()
    barrier = threading.Barrier(2, timeout=60)
    inside = threading.Barrier(2, timeout=60)
    real_run = encoder.session.run

    class Session:
        def run(self, *args, **kwargs):
            inside.wait()  # both callers got this far before either ran
            return real_run(*args, **kwargs)

    monkeypatch.setattr(encoder, "session", Session())
    results: dict[str, list[float]] = {}

    def embed(text: str) -> None:
        barrier.wait()
        results[text] = embeddings.embed_local([text])[0]

    threads = [threading.Thread(target=embed, args=(t,)) for t in ("refund policy", "parking at the office")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    monkeypatch.undo()
    assert set(results) == {"refund policy", "parking at the office"}
    assert np.allclose(results["refund policy"], embeddings.embed_local(["refund policy"])[0], atol=1e-6)


def test_many_threads_get_the_same_vectors_as_one():
    texts = [f"question {n} about invoices and travel expenses" for n in range(24)]
    expected = embeddings.embed_local(texts)
    got: dict[int, list[float]] = {}

    def embed(n: int) -> None:
        got[n] = embeddings.embed_local([texts[n]])[0]

    threads = [threading.Thread(target=embed, args=(n,)) for n in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert np.allclose([got[n] for n in range(len(texts))], expected, atol=1e-5)


def test_the_async_variant_runs_on_the_modules_own_threads(monkeypatch):
    seen: list[str] = []
    real = embeddings.embed_local

    def spy(texts):
        seen.append(threading.current_thread().name)
        return real(texts)

    def run_in_own_thread(coroutine):  # a loop of its own: the session may have one running (Playwright's)
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    monkeypatch.setattr(embeddings, "embed_local", spy)
    vectors = run_in_own_thread(embeddings.aembed_local(["refund policy"]))
    assert np.allclose(vectors, real(["refund policy"]), atol=1e-6)
    assert seen and seen[0].startswith("embed-async")
    assert run_in_own_thread(embeddings.aembed_local([])) == []


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_prefork_worker_loads_the_model_once_in_its_parent(tmp_path):
    """Two prefork children embed with the model their parent loaded before forking: each child's only load
    record is the parent's (none of its own), and the vectors are right."""
    from saas.celery import app

    queue = f"crewdesk-embed-{uuid.uuid4().hex[:8]}"
    worker = start_process(
        [str(BIN_DIR / "celery"), "-A", "saas", "worker", "--pool", "prefork", "--concurrency", "2",
         "--include", "tests.llm.embedding_probe", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
         "--hostname", f"{queue}@%h", "--queues", queue, "--prefetch-multiplier", "1"],
        tmp_path / "worker.log", subprocess_env(),
    )  # fmt: skip
    try:
        wait_until(lambda: any(queue in name for reply in app.control.ping(timeout=0.5) for name in reply),
                   timeout=180, what="celery worker", process=worker)  # fmt: skip
        parent = worker.process.pid
        answers: list[dict] = []
        for _ in range(10):  # until both children have answered (the pool hands tasks to the idle one)
            pending = [app.send_task("tests.embedding_probe", args=[f"probe {len(answers) + i}"], queue=queue)
                       for i in range(4)]  # fmt: skip
            answers += [result.get(timeout=120) for result in pending]
            if len({a["pid"] for a in answers}) >= 2:
                break
            time.sleep(0.2)
    finally:
        worker.stop()
    children = {a["pid"] for a in answers}
    assert len(children) == 2 and parent not in children, worker.log()[-3000:]
    for answer in answers:
        assert answer["loads"] == [["onnx", parent], ["onnx-int8", parent]]  # by the parent; never in a child
        assert answer["origin_pid"] == answer["passages_origin_pid"] == parent
        assert answer["parallelism"] == max(1, len(os.sched_getaffinity(0)) // 2)
        expected = embeddings.embed_local([answer["text"]])[0]
        assert np.allclose(answer["vector"], expected, atol=1e-5)
        expected = embeddings.embed_local([answer["text"]], passages=True)[0]
        assert np.allclose(answer["passage_vector"], expected, atol=1e-5)


@pytest.mark.django_db(transaction=True)
def test_an_embed_gives_the_callers_pooled_connection_back_before_it_waits_for_a_slot():
    from django.db import connection

    from accounts.models import Organization

    Organization.objects.exists()  # the request has taken a pooled connection
    assert connection.connection is not None
    embeddings.embed_local(["a question"])
    assert connection.connection is None  # back in the pool while the forward pass queued and ran
    assert Organization.objects.count() >= 0  # and the next query takes one again
