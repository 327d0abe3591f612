"""Collections and documents: upload, reindex, delete, and asking them (retrieve, answer, cite, check). The
ingestion an upload queues (extract, chunk, embed, store) is documents/ingestion.py."""

import hashlib
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Organization
from billing import selectors as billing_selectors
from documents import grounding
from documents.extraction import ExtractionRefused, detect_kind
from documents.models import Chunk, Collection, Document
from saas.core import crypto, storage
from saas.core.errors import ApplicationError, Conflict, NotFound
from saas.llm import gateway, guardrails, ledger, tracing
from saas.llm.models import SemanticCacheEntry
from saas.llm.prompt_defaults import BUILTINS
from saas.llm.providers import ChatRequest

DEFAULT_COLLECTION = "Documents"
MAX_QUESTION_CHARS = 4000


class DocumentRefused(ApplicationError):
    """An upload we cannot take, with the HTTP status that says why (400, 413, 415)."""

    def __init__(self, refusal: ExtractionRefused) -> None:
        super().__init__(refusal.message, code=refusal.code)
        self.status = refusal.status


# --- Collections -------------------------------------------------------------------------------------------


def collection_default(*, org: Any) -> Collection:
    collections = Collection.objects.for_org(org)
    found = collections.filter(is_default=True).first()
    if found is not None:
        return found
    with transaction.atomic():
        collection, _ = collections.get_or_create(
            organization=org, is_default=True, defaults={"name": DEFAULT_COLLECTION}
        )
    return collection


def collection_get(*, org: Any, collection_id: Any) -> Collection:
    collection = Collection.objects.for_org(org).filter(pk=collection_id).first()
    if collection is None:
        raise NotFound("No such collection.", code="collection_not_found")
    return collection


def collection_create(*, org: Any, name: str, description: str = "") -> Collection:
    name = " ".join(name.split())
    if not name:
        raise ApplicationError("A collection needs a name.", code="invalid")
    collections = Collection.objects.for_org(org)
    if collections.filter(name__iexact=name).exists():
        raise Conflict(f"There is already a collection named {name!r}.", code="duplicate_collection")
    return collections.create(organization=org, name=name[:100], description=description[:500])


def collection_changed(collection: Collection) -> None:
    """A new knowledge-base version. Cached answers are keyed by the versions they were built on, so none of
    the old ones is served again; the semantic cache's entries built on this collection are deleted too (the
    exact cache's expire with their TTL: their keys are hashes that cannot be found by collection)."""
    Collection.objects.for_org(collection.organization_id).filter(pk=collection.pk).update(
        version=F("version") + 1, updated_at=timezone.now()
    )
    SemanticCacheEntry.objects.for_org(collection.organization_id).filter(scope__contains=str(collection.pk)).delete()


# --- Upload ------------------------------------------------------------------------------------------------


def document_upload(
    *, org: Any, data: bytes, filename: str, collection: Collection | None = None, title: str = "",
    user: Any = None, api_key: Any = None,
) -> Document:  # fmt: skip
    """Checks the bytes (size, type by content, duplicate), stores the file and queues ingestion."""
    if len(data) > settings.DOCUMENTS_MAX_BYTES:
        raise DocumentRefused(too_large(len(data)))
    try:
        kind = detect_kind(data)
    except ExtractionRefused as refusal:
        raise DocumentRefused(refusal) from refusal
    collection = collection or collection_default(org=org)
    digest = hashlib.sha256(data).hexdigest()
    documents = Document.objects.for_org(org)
    existing = documents.filter(collection=collection, sha256=digest).first()
    if existing is not None:
        raise Conflict(
            f"This file is already in {collection.name!r} as {existing.title!r}.",
            code="duplicate_document",
            details={"document_id": str(existing.pk)},
        )
    name = (filename or "document").replace("\\", "/").rsplit("/", 1)[-1][:255] or "document"
    with transaction.atomic():
        _check_storage(org, len(data))
        document = Document(
            organization=org, collection=collection, title=(title or name)[:300], filename=name, kind=kind,
            size_bytes=len(data), sha256=digest, uploaded_by=user, api_key=api_key,
        )  # fmt: skip
        document.file.save(name, ContentFile(data), save=False)
        document.save()
        transaction.on_commit(lambda: enqueue_ingestion(document))
    return document


def _check_storage(org: Any, size: int) -> None:
    """The plan's storage limit, under a lock on the org so that parallel uploads cannot pass it together."""
    limit = billing_selectors.storage_limit_bytes(org=org)
    if limit is None:
        return
    Organization.objects.select_for_update().filter(pk=org.pk).first()  # serialises this org's uploads
    used = billing_selectors.storage_used(org=org)
    if used + size > limit:
        plan = billing_selectors.billing_state(org=org).plan
        raise ApplicationError(
            f"This file ({size / 1e6:.1f} MB) does not fit in the {plan.name} plan's storage: "
            f"{used / 1e6:.1f} MB of {limit / 1e6:.0f} MB used. Delete documents or upgrade the plan.",
            code="storage_limit", status=402,
            details={"limit": "storage", "plan": plan.slug, "used_bytes": used, "allowed_bytes": limit,
                     "upgrade_url": f"/o/{org.slug}/billing/"},
        )  # fmt: skip


def too_large(size: int) -> ExtractionRefused:
    limit = settings.DOCUMENTS_MAX_BYTES
    return ExtractionRefused(
        f"The file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB.", status=413, code="file_too_large"
    )


def enqueue_ingestion(document: Document) -> None:
    """Queue the document's ingestion (documents/ingestion.py, through the Celery task)."""
    from documents.tasks import ingest_document

    ingest_document.delay(str(document.organization_id), str(document.pk))


def enqueue_index_sync() -> None:
    """A collection shrank or went: its own HNSW index may have to go (documents.indexing). Queued with
    `robust=True` on commit: a broker outage is logged, and the beat runs the sync within ten minutes."""
    from documents.tasks import sync_collection_indexes

    sync_collection_indexes.delay()


# --- Reading a document ------------------------------------------------------------------------------------


def document_get(*, org: Any, document_id: Any) -> Document:
    document = Document.objects.for_org(org).select_related("collection").filter(pk=document_id).first()
    if document is None:
        raise NotFound("No such document.", code="document_not_found")
    return document


def document_original(*, org: Any, document_id: Any) -> tuple[Document, Any]:
    """A document and its original file opened for streaming (decrypted as it is read; a missing or damaged
    file is StoredFileMissing / StoredFileCorrupt before anything is sent)."""
    document = document_get(org=org, document_id=document_id)
    if not document.file:
        raise storage.StoredFileMissing("This document has no stored file.")
    return document, document.file.storage.open(document.file.name or "", "rb")


def chunk_text(chunk: Chunk) -> str:
    return crypto.decrypt(chunk.text_encrypted)


def document_text(document: Document) -> str:
    return crypto.decrypt(document.text_encrypted) if document.text_encrypted else ""


# --- Reindex and delete ------------------------------------------------------------------------------------


def document_reindex(*, org: Any, document_id: Any) -> Document:
    document = document_get(org=org, document_id=document_id)
    with transaction.atomic():
        Document.objects.for_org(org).filter(pk=document.pk).update(
            status=Document.Status.QUEUED, progress=0, failure_reason="", attempts=0, updated_at=timezone.now()
        )
        collection_changed(document.collection)  # a ready document's passages leave the search until ingested
        transaction.on_commit(lambda: enqueue_ingestion(document))
    document.refresh_from_db()
    return document


def document_delete(*, org: Any, document_id: Any) -> None:
    """Removes the document, its chunks and its file; the collection's version moves on, so cached answers
    built on it are no longer served."""
    document = document_get(org=org, document_id=document_id)
    with transaction.atomic():
        Chunk.objects.for_org(org).filter(document=document).delete()
        document.delete()
        collection_changed(document.collection)
        transaction.on_commit(lambda: document.file.delete(save=False))
        transaction.on_commit(enqueue_index_sync, robust=True)


# --- Ask ---------------------------------------------------------------------------------------------------

NOT_FOUND_ANSWER = "I could not find this in your documents."
MARKER = re.compile(r"\[(\d{1,3})\]")
SENTENCE = re.compile(r"[^.!?\n]+[.!?]*(?:\s*\[\d{1,3}\])*")
# The built-in answer rules; what an ask uses is the org's `ask.system` prompt version (saas/llm/prompts.py).
ANSWER_RULES = BUILTINS["ask.system"].text


@dataclass
class AskPlan:
    """What an answer is built from: the retrieved passages and the messages for the model."""

    question: str
    hits: list[Any]
    request: ChatRequest
    scope: str
    screened: list[Any] = field(default_factory=list)  # the guardrails' findings on the passages
    vector: list[float] | None = None  # the question's embedding, when the semantic cache's model made it
    prompt: Any = None  # the `ask.system` version the messages were built with (a prompts.ResolvedPrompt)

    @property
    def flagged(self) -> set[int]:
        return {finding.index for finding in self.screened}

    @property
    def sources(self) -> gateway.Sources:
        """What the answer rests on, for the semantic cache: the passages' ids in prompt order, and the
        question's embedding made for retrieval (so the question is embedded once per ask)."""
        return gateway.Sources(scope=self.scope, chunk_ids=tuple(hit.chunk_id for hit in self.hits), vector=self.vector)


@dataclass
class Answer:
    text: str
    found: bool
    citations: list[dict[str, Any]]
    groundedness: float | None
    unsupported: list[str]
    call_id: str | None = None
    model: str = ""
    engine: str = ""
    usage: dict[str, int] | None = None
    cost_usd: str = "0"
    cached: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.call_id, "answer": self.text, "found": self.found, "citations": self.citations,
            "groundedness": self.groundedness, "unsupported": self.unsupported, "model": self.model,
            "engine": self.engine, "usage": self.usage, "cost_usd": self.cost_usd, "cached": self.cached,
        }  # fmt: skip


def ask_plan(
    *, caller: gateway.Caller, question: str, collection: Any, top_k: int | None,
    history: list[dict[str, str]] | None = None, follows_up: str = "", max_chars: int = MAX_QUESTION_CHARS,
    prompt: Any = None,
) -> AskPlan:  # fmt: skip
    """`collection`: one, several (a conversation's) or None (all the org's). `history`: the earlier turns of a
    conversation, sent between the sources and the question (a follow-up is read in context). `follows_up`:
    the previous question, retrieved for with this one, so that "and for managers?" still finds what the
    conversation is about. `prompt`: the `ask.system` version to use (a prompts.ResolvedPrompt, e.g. a candidate
    under evaluation); by default the caller's (prompt_resolve)."""
    from documents.selectors import chunk_search, in_scope

    question = question.strip()
    if not question or len(question) > max_chars:
        raise ApplicationError(f"A question is 1 to {max_chars} characters.", code="invalid")
    history = history or []
    query = f"{follows_up.strip()[-1000:]}\n{question}" if follows_up.strip() else question
    embedded = gateway.embed(caller=caller, model=settings.DOCUMENTS_EMBEDDING_MODEL, texts=[query])
    hits = chunk_search(org=caller.org, query=query, collection=collection, top_k=top_k, caller=caller,
                        query_vector=embedded.vectors[0])  # fmt: skip
    screened = gateway.screen_passages(caller=caller, texts=[hit.text for hit in hits])
    flagged = {finding.index for finding in screened}
    # One line per source, its number first: models cite by number, and the offline engine reads the label.
    # A passage the guardrails flagged goes in quoted as data, with a warning (never as instructions).
    sources = "\n".join(
        f"[{n}] {guardrails.quote_as_data(' '.join(hit.text.split()), label=f'Source {n}') if n in flagged else ' '.join(hit.text.split())}"  # noqa: E501
        for n, hit in enumerate(hits, start=1)
    )
    prompt = prompt or gateway.resolve_prompt(caller=caller, key="ask.system")
    request = ChatRequest(
        messages=[
            {"role": "system", "content": f"{prompt.render()}\n\nSources:\n{sources}"},
            *history,
            {"role": "user", "content": question},
        ],
        **prompt.request_options(),
    )
    versions = in_scope(Collection.objects.for_org(caller.org), collection, field="pk")
    # The knowledge-base version: any change to the documents makes earlier cached answers stale.
    scope = "ask:" + ",".join(f"{c.pk}.{c.version}" for c in versions.order_by("pk"))
    # The semantic cache embeds with the local model: the retrieval vector is reused when it is that model's.
    vector = embedded.vectors[0] if embedded.model == gateway.DEFAULT_EMBEDDING_MODEL else None
    return AskPlan(question, hits, request, scope, screened, vector, prompt)


@tracing.traces("ask", "Ask")
def ask(
    *, caller: gateway.Caller, question: str, collection: Collection | None = None, top_k: int | None = None,
    model: str = "default", prompt: Any = None, bypass_cache: bool = False,
) -> Answer:  # fmt: skip
    """`bypass_cache`: an eval run answers afresh (its latency and its answer are the version's own, now)."""
    plan = ask_plan(caller=caller, question=question, collection=collection, top_k=top_k, prompt=prompt)
    if not plan.hits:
        return Answer(NOT_FOUND_ANSWER, found=False, citations=[], groundedness=None, unsupported=[])
    result = gateway.chat(caller=caller, model=plan.prompt.model_for(model), request=plan.request,
                          sources=plan.sources, screened=plan.screened, prompt=plan.prompt,
                          bypass_cache=bypass_cache)  # fmt: skip
    return answer_finish(caller=caller, plan=plan, text=result.text, call_id=result.call_id, model=result.model,
                         engine=result.engine, usage=result.usage, cached=result.cached,
                         cost_usd=result.cost_usd)  # fmt: skip


def answer_finish(
    *, caller: gateway.Caller, plan: AskPlan, text: str, call_id: str, model: str, engine: str, usage: Any,
    cached: bool, cost_usd: Any,
) -> Answer:  # fmt: skip
    """Citations for the markers in the answer, and each sentence checked against what it cites."""
    cited: dict[int, Any] = {}
    for marker in MARKER.findall(text):
        number = int(marker)
        if 1 <= number <= len(plan.hits):
            cited[number] = plan.hits[number - 1]
    sentences = [s.strip() for s in SENTENCE.findall(text) if s.strip()]
    citations = [
        {"marker": n, "chunk_id": hit.chunk_id, "document_id": hit.document_id, "title": hit.title,
         "page": hit.page, "heading": hit.heading, "flagged": n in plan.flagged,
         "quote": _quote(hit.text, [MARKER.sub("", s) for s in sentences if f"[{n}]" in s])}
        for n, hit in sorted(cited.items())
    ]  # fmt: skip
    groundedness, unsupported = _groundedness(caller, text, plan.hits)
    ledger.groundedness_record(org=caller.org, call_id=call_id, value=groundedness)  # experiments, dashboards
    found = bool(cited) and not text.strip().startswith(("I could not find", NOT_FOUND_ANSWER))
    return Answer(
        text, found=found, citations=citations, groundedness=groundedness, unsupported=unsupported, call_id=call_id,
        model=model, engine=engine, cached=cached, cost_usd=str(cost_usd),
        usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
    )  # fmt: skip


def _quote(passage: str, citing: list[str]) -> str:
    """The passage's sentences that the citing answer sentences rest on (best word overlap each), in the
    passage's order: the text a reader should find when they open the citation."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(passage.split())) if s.strip()]
    if not sentences:
        return passage[:500]

    def words(text: str) -> set[str]:
        return set(re.findall(r"\w+", text.lower()))

    chosen = set()
    for claim in citing:
        claimed = words(claim)
        chosen.add(
            max(
                range(len(sentences)),
                key=lambda i: len(claimed & words(sentences[i])) / (len(claimed | words(sentences[i])) or 1),
            )
        )
    return " … ".join(sentences[i] for i in sorted(chosen))[:500]


def _groundedness(caller: gateway.Caller, text: str, hits: list[Any]) -> tuple[float | None, list[str]]:
    sentences = [s.strip() for s in SENTENCE.findall(text) if len(MARKER.sub("", s).split()) >= 3]
    if not sentences:
        return None, []
    plain = [MARKER.sub("", s).strip() for s in sentences]
    vectors = gateway.embed(caller=caller, model=settings.DOCUMENTS_EMBEDDING_MODEL, texts=plain).vectors
    unsupported = []
    for sentence, vector, shown in zip(sentences, vectors, plain, strict=True):
        numbers = [int(m) for m in MARKER.findall(sentence) if 1 <= int(m) <= len(hits)]
        best = max((sum(a * b for a, b in zip(vector, hits[n - 1].embedding, strict=True)) for n in numbers),
                   default=0.0)  # fmt: skip
        # Close in meaning is not enough: a changed number, date, name or negation is not supported either.
        if best < settings.DOCUMENTS_SUPPORTED or grounding.missing_facts(shown, [hits[n - 1].text for n in numbers]):
            unsupported.append(shown)
    return round(1 - len(unsupported) / len(sentences), 3), unsupported


@tracing.traces("ask", "Ask")
def ask_stream(
    *, caller: gateway.Caller, question: str, collection: Any = None, top_k: int | None = None,
    model: str = "default", should_stop: Callable[[], bool] = lambda: False,
    history: list[dict[str, str]] | None = None, follows_up: str = "", max_chars: int = MAX_QUESTION_CHARS,
) -> Generator[dict[str, Any], None, None]:  # fmt: skip
    """The answer as events: "delta" {text}, then "done" (the whole Answer) or "stopped". Bad input and
    failures before the first token raise when the first event is asked for, so callers can still answer
    with a proper status. `should_stop` is checked between tokens; stopping closes the model call."""
    plan = ask_plan(caller=caller, question=question, collection=collection, top_k=top_k, history=history,
                    follows_up=follows_up, max_chars=max_chars)  # fmt: skip
    if not plan.hits:
        nothing = Answer(NOT_FOUND_ANSWER, found=False, citations=[], groundedness=None, unsupported=[])
        yield {"type": "delta", "text": nothing.text}
        yield {"type": "done", **nothing.as_json()}
        return
    stream = gateway.chat_stream(caller=caller, model=plan.prompt.model_for(model), request=plan.request,
                                 sources=plan.sources, screened=plan.screened, prompt=plan.prompt)  # fmt: skip
    parts: list[str] = []
    try:
        for item in stream:
            if isinstance(item, gateway.GatewayStreamEnd):
                answer = answer_finish(
                    caller=caller, plan=plan, text="".join(parts), call_id=item.call_id, model=item.model,
                    engine=item.engine, usage=item.usage, cached=item.cached, cost_usd=item.cost_usd,
                )  # fmt: skip
                yield {"type": "done", **answer.as_json()}
                return
            parts.append(item)
            yield {"type": "delta", "text": item}
            if should_stop():
                stream.close()  # the ledger records the call as cancelled
                yield {"type": "stopped", "answer": "".join(parts)}
                return
    finally:
        stream.close()
