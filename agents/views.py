from typing import Any

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.permissions import ASK
from accounts.views import OrgHttpRequest, org_page
from agents import services
from agents.models import Conversation, Message
from saas.llm import gateway
from saas.llm.models import ModelConfig


def _model_choices(org: Any) -> list[tuple[str, str]]:
    policy = gateway.org_settings(org)
    choices = [("auto", "Auto (picks for you)")]
    for model in ModelConfig.objects.filter(enabled=True, kind=ModelConfig.Kind.CHAT).order_by("alias"):
        if gateway._allowed(model, policy) and gateway.available(model):
            label = f"{model.alias} · offline extractive, not generative" if model.upstream == "local" else model.alias
            choices.append((model.alias, label))
    return choices


@org_page(ASK)
@require_http_methods(["GET", "POST"])
def chat_index(request: OrgHttpRequest) -> HttpResponse:
    if request.method == "POST":
        conversation = services.conversation_create(org=request.org, user=request.user)
        return redirect("chat-conversation", org_slug=request.org.slug, conversation_id=conversation.pk)
    conversations = Conversation.objects.for_org(request.org).filter(user=request.user).order_by("-updated_at")[:100]
    return render(request, "agents/chat_index.html", {"conversations": conversations})


@org_page(ASK)
def chat_conversation(request: OrgHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = services.conversation_get(org=request.org, user=request.user, conversation_id=conversation_id)
    messages = Message.objects.for_org(request.org).filter(conversation=conversation).order_by("created_at")
    turns = [{"message": m, "text": services.message_text(m)} for m in messages]
    return render(
        request,
        "agents/chat.html",
        {"conversation": conversation, "turns": turns, "models": _model_choices(request.org)},
    )
