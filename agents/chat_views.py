"""The chat workspace's pages: the conversation list with search, a conversation, the start panel (Chat and
Ask are two modes of it: Ask starts grounded in the team's documents), and the plain-form fallbacks of rename,
pin, collections and delete (chat.js does the same through the API). Thin: agents/conversations.py does the
work; another org's or another person's conversation is a 404."""

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from accounts.permissions import ADMIN, ASK
from accounts.views import OrgHttpRequest, org_page, run_service
from agents import conversations, services
from agents.views import _model_choices
from documents.selectors import collection_list

PENDING = "chat_pending"  # session key: {conversation id: the first question, sent by chat.js on open}


def _workspace(request: OrgHttpRequest, **extra: Any) -> dict[str, Any]:
    query = request.GET.get("q", "").strip()[:200]
    return {
        "conversations": conversations.conversation_list(org=request.org, user=request.user, query=query),
        "query": query, "collections": collection_list(org=request.org),
        "models": [("default", "Team default"), *_model_choices(request.org)],  # as Ask: the team's choice first
        "local": conversations.answers_locally(org=request.org, model="default"), **extra,
    }  # fmt: skip


def _start(request: OrgHttpRequest) -> HttpResponse:
    question = request.POST.get("question", "").strip()
    started = run_service(request, lambda: conversations.conversation_start(
        org=request.org, user=request.user, collection_ids=request.POST.getlist("collections"),
        model=request.POST.get("model", "default"),
    ))  # fmt: skip
    if not started or started is True:
        return redirect("ask" if request.POST.get("mode") == "ask" else "chat-index", org_slug=request.org.slug)
    if question:
        request.session[PENDING] = {**request.session.get(PENDING, {}), str(started.pk): question[:20_000]}
    return redirect("chat-conversation", org_slug=request.org.slug, conversation_id=started.pk)


@org_page(ASK)
@require_http_methods(["GET", "POST"])
def chat_index(request: OrgHttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _start(request)
    return render(request, "agents/chat_index.html", _workspace(request, mode="chat"))


@org_page(ASK)
def ask_page(request: OrgHttpRequest) -> HttpResponse:
    """Ask: the same workspace, starting a conversation grounded in the team's documents."""
    return render(request, "documents/ask.html", _workspace(request, mode="ask", all_picked=True))


@org_page(ASK)
def chat_conversation(request: OrgHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = services.conversation_get(org=request.org, user=request.user, conversation_id=conversation_id)
    pending = request.session.get(PENDING, {})
    question = pending.pop(str(conversation.pk), "")
    if question:
        request.session[PENDING] = pending
    picked = {c.pk for c in conversation.collections.all()}
    grounded, local = conversations.grounding(conversation)
    return render(request, "agents/chat.html", _workspace(
        request, conversation=conversation, turns=conversations.turns(
            conversation=conversation, user=request.user, traced=request.principal.has(ADMIN)),
        picked=picked, pending=question, grounded=grounded is not None, local=local,
    ))  # fmt: skip


def _back(request: OrgHttpRequest, conversation_id: Any) -> HttpResponse:
    """Back to the page the form was on (the sidebar's forms are on every workspace page), else the
    conversation."""
    wanted = request.POST.get("next", "")
    if wanted.startswith(f"/o/{request.org.slug}/") and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(wanted)
    return redirect("chat-conversation", org_slug=request.org.slug, conversation_id=conversation_id)


@org_page(ASK)
@require_POST
def chat_rename(request: OrgHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = services.conversation_get(org=request.org, user=request.user, conversation_id=conversation_id)
    title = request.POST.get("title", "")
    run_service(request, lambda: conversations.conversation_update(conversation=conversation, title=title))
    return _back(request, conversation.pk)


@org_page(ASK)
@require_POST
def chat_pin(request: OrgHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = services.conversation_get(org=request.org, user=request.user, conversation_id=conversation_id)
    pinned = request.POST.get("pinned") == "1"
    run_service(request, lambda: conversations.conversation_update(conversation=conversation, pinned=pinned))
    return _back(request, conversation.pk)


@org_page(ASK)
@require_POST
def chat_collections(request: OrgHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = services.conversation_get(org=request.org, user=request.user, conversation_id=conversation_id)
    picked = request.POST.getlist("collections")
    run_service(request, lambda: conversations.conversation_update(conversation=conversation, collection_ids=picked))
    return _back(request, conversation.pk)


@org_page(ASK)
@require_POST
def chat_delete(request: OrgHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = services.conversation_get(org=request.org, user=request.user, conversation_id=conversation_id)
    title = str(conversation)
    conversations.conversation_delete(conversation=conversation)
    messages.success(request, f"Deleted {title!r}.")
    return redirect("chat-index", org_slug=request.org.slug)
