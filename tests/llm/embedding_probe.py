"""A task only the embedding tests' worker imports (`celery worker --include tests.llm.embedding_probe`): it
embeds a text in whichever prefork child runs it and reports where that child's model was loaded."""

import os

from celery import shared_task


@shared_task(name="tests.embedding_probe")
def embedding_probe(text: str) -> dict:
    from saas.llm import embeddings

    vector = embeddings.embed_local([text])[0]
    passage_vector = embeddings.embed_local([text], passages=True)[0]
    return {
        "text": text,
        "pid": os.getpid(),
        "origin_pid": embeddings._model().origin[0],
        "passages_origin_pid": embeddings._model(passages=True).origin[0],
        "loads": [list(load) for load in embeddings.loads],
        "parallelism": embeddings.parallelism(),
        "vector": vector,
        "passage_vector": passage_vector,
    }
