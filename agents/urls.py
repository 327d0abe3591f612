from django.urls import path
from rest_framework.routers import SimpleRouter

from agents import api, chat_views, conversations_api, views

router = SimpleRouter(trailing_slash=False)
router.register("crews", api.CrewViewSet, basename="crew")
router.register("runs", api.RunViewSet, basename="run")
router.register("conversations", conversations_api.ConversationViewSet, basename="conversation")

org_patterns = [
    path("chat/", chat_views.chat_index, name="chat-index"),
    path("chat/<uuid:conversation_id>/", chat_views.chat_conversation, name="chat-conversation"),
    path("chat/<uuid:conversation_id>/rename/", chat_views.chat_rename, name="chat-rename"),
    path("chat/<uuid:conversation_id>/pin/", chat_views.chat_pin, name="chat-pin"),
    path("chat/<uuid:conversation_id>/collections/", chat_views.chat_collections, name="chat-collections"),
    path("chat/<uuid:conversation_id>/delete/", chat_views.chat_delete, name="chat-delete"),
    path("ask/", chat_views.ask_page, name="ask"),
    path("crews/", views.crews_index, name="crews-index"),
    path("crews/new/", views.crew_new, name="crew-new"),
    path("crews/from-starter/", views.crew_from_starter, name="crew-from-starter"),
    path("crews/<uuid:crew_id>/", views.crew_detail, name="crew-detail"),
    path("crews/<uuid:crew_id>/edit/", views.crew_edit, name="crew-edit"),
    path("crews/<uuid:crew_id>/delete/", views.crew_delete, name="crew-delete"),
    path("crews/<uuid:crew_id>/run/", views.crew_run, name="crew-run"),
    path("runs/compare/", views.runs_compare, name="runs-compare"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<uuid:run_id>/retry/", views.run_retry, name="run-retry"),
]

api_urlpatterns = [
    path("messages/<uuid:pk>/feedback", api.MessageFeedbackView.as_view(), name="message-feedback"),
    path("responses/<uuid:pk>/feedback", api.ResponseFeedbackView.as_view(), name="response-feedback"),
    path("crew-starters", api.CrewStartersView.as_view(), name="crew-starters"),
    path("crews/<uuid:pk>/runs", api.CrewRunsView.as_view(), name="crew-runs"),
    *router.urls,
]
