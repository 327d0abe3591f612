"""The gateway's two caches: answers to the very same request (exact, in Redis) and answers to a question of
the same meaning over the same sources (semantic, pgvector).

The exact cache keys the whole request (org, model, prompt version, messages, parameters, the caller's
scope); a Redis outage costs a call, never the answer. The prompt version is the id of the managed prompt
version the caller used (saas/llm/prompts.py): a new production version, or another experiment arm, never
gets the old version's answers; calls without a managed prompt (the /v1 API) key on LLM_PROMPT_VERSION.

The semantic cache serves single-turn questions that a caller asks over retrieved passages (documents' ask):
the caller hands in `Sources` with the knowledge-base version (scope), the question's embedding (made once,
for retrieval) and the ids of the passages in the prompt, in order. An answer cites its passages with [n]
markers; its entry keeps the ids of the passages it cites. A later question of the same meaning is answered
from an entry only when the new retrieval returned every passage the entry cites (an entry citing nothing
needs the very same passages), and the entry's markers are renumbered to the new prompt's order.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from pgvector.django import CosineDistance

from saas.core import crypto
from saas.core.redis import get_redis
from saas.llm import structured
from saas.llm.embeddings import embed_local
from saas.llm.models import ModelConfig, SemanticCacheEntry
from saas.llm.pii import Masker
from saas.llm.providers import ChatRequest, ChatResult, Usage

MARKER = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Sources:
    """What a retrieval-augmented question was answered from, for the semantic cache: the knowledge-base
    version, the ids of the passages in the prompt as numbered there ([1] is the first), and the question's
    embedding by the local model, when the caller has it (None: the cache embeds the question)."""

    scope: str
    chunk_ids: tuple[str, ...] = ()
    vector: tuple[float, ...] | list[float] | None = None


@dataclass
class Hit:
    text: str  # masked, as stored; markers renumbered for this prompt
    usage: Usage


# --- Exact ---------------------------------------------------------------------------------------------------


def exact_cache_prefix(org_id: Any) -> str:
    """The org first: erasure finds (SCAN) and deletes all of an org's entries (saas/llm/privacy.py)."""
    return f"crewdesk:llm:exact:{org_id}:"


def prompt_version(prompt: Any) -> str:
    """What the caches key on: the managed prompt's version, else the operator's LLM_PROMPT_VERSION."""
    return prompt.cache_version if prompt is not None else str(settings.LLM_PROMPT_VERSION)


def exact_key(
    org: Any, model: ModelConfig, request: ChatRequest, sources: Sources | None = None, prompt: Any = None
) -> str:
    material = json.dumps(
        {
            "org": str(org.pk),
            "scope": sources.scope if sources else None,  # the knowledge-base version, when the caller gives one
            "sources": list(sources.chunk_ids) if sources else None,
            "model": model.alias,
            "prompt_version": prompt_version(prompt),
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "response_format": request.response_format,
            "request": structured.cache_material(request),  # stop, seed, tool_choice, ...: another answer
        },
        sort_keys=True,
    )
    return exact_cache_prefix(org.pk) + hashlib.sha256(material.encode()).hexdigest()


def exact_get(key: str) -> Hit | None:
    try:
        raw = get_redis().get(key)
    except Exception:
        return None  # a cache outage costs a call, never the answer
    if not raw:
        return None
    found = json.loads(raw)
    return Hit(found["text"], Usage(*found["usage"]))


def exact_payload(result: ChatResult) -> str:
    """What the exact cache keeps of an answer (exact_get reads it)."""
    return json.dumps({"text": result.text, "usage": [result.usage.prompt_tokens, result.usage.completion_tokens]})


def exact_set(key: str, result: ChatResult) -> None:
    exact_put(key, exact_payload(result))


def exact_put(key: str, payload: str) -> None:
    with suppress(Exception):  # a cache outage must not fail an answer we already have
        get_redis().set(key, payload, ex=settings.LLM_CACHE_TTL)


# --- Semantic ------------------------------------------------------------------------------------------------


def semantic_question(request: ChatRequest, masker: Masker, sources: Sources | None) -> str | None:
    """The question to look up, or None when the semantic cache does not apply: only single-turn questions
    (system context allowed) with caller-given sources, and never when personal data was masked
    (placeholders from one person's question must not come back in another's answer)."""
    if sources is None or masker.found:
        return None
    users = [m for m in request.messages if m["role"] == "user"]
    if len(users) != 1 or any(m["role"] not in ("system", "user") for m in request.messages):
        return None
    return str(users[0]["content"])


def question_vector(question: str, sources: Sources) -> list[float]:
    """The question's embedding: the caller's (made for retrieval), else made here."""
    if sources.vector is not None:
        return [float(x) for x in sources.vector]
    return embed_local([question])[0]


def cited(text: str, chunk_ids: tuple[str, ...]) -> list[str]:
    """The ids of the passages an answer cites, in marker order, each once."""
    ids: list[str] = []
    for marker in MARKER.findall(text):
        number = int(marker)
        if 1 <= number <= len(chunk_ids) and chunk_ids[number - 1] not in ids:
            ids.append(chunk_ids[number - 1])
    return ids


def renumber(text: str, old: list[str], new: tuple[str, ...]) -> str:
    """An answer's [n] markers, from the order of the passages it was written over to the new prompt's."""
    position = {chunk_id: index for index, chunk_id in enumerate(new, start=1)}

    def swap(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if 1 <= number <= len(old) and old[number - 1] in position:
            return f"[{position[old[number - 1]]}]"
        return match.group(0)

    return MARKER.sub(swap, text)


def semantic_get(org: Any, model: ModelConfig, sources: Sources, vector: list[float], prompt: Any = None) -> Hit | None:
    ids = [str(i) for i in sources.chunk_ids]
    # An entry is usable only over the passages it rests on: every passage it cites is in this prompt, or,
    # citing none, it was written over exactly these passages.
    usable = Q(cited_chunk_ids__len__gt=0, cited_chunk_ids__contained_by=ids) | Q(
        cited_chunk_ids__len=0, source_chunk_ids__contains=ids, source_chunk_ids__contained_by=ids
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            # pgvector 0.8: keep scanning the HNSW index until the org/model/scope filters have enough rows.
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        entry = (
            SemanticCacheEntry.objects.for_org(org)
            .filter(
                model_alias=model.alias,
                prompt_version=prompt_version(prompt),
                scope=sources.scope[:128],
                expires_at__gt=timezone.now(),
            )
            .filter(usable)
            .annotate(distance=CosineDistance("embedding", vector))
            .filter(distance__lte=1 - settings.LLM_SEMANTIC_THRESHOLD)
            .order_by("distance")
            .first()
        )
    if entry is None:
        return None
    text = renumber(crypto.decrypt(entry.answer_encrypted), list(entry.source_chunk_ids), sources.chunk_ids)
    return Hit(text, Usage(entry.prompt_tokens, entry.completion_tokens))


def semantic_set(
    org: Any, model: ModelConfig, sources: Sources, vector: list[float], result: ChatResult, prompt: Any = None
) -> None:
    ids = tuple(str(i) for i in sources.chunk_ids)
    SemanticCacheEntry.objects.for_org(org).create(
        organization=org,
        model_alias=model.alias,
        prompt_version=prompt_version(prompt),
        scope=sources.scope[:128],
        embedding=vector,
        answer_encrypted=crypto.encrypt(result.text),
        source_chunk_ids=list(ids),
        cited_chunk_ids=cited(result.text, ids),
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        expires_at=timezone.now() + timedelta(seconds=settings.LLM_CACHE_TTL),
    )
