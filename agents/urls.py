from django.urls import path

from agents import api, views

org_patterns = [
    path("chat/", views.chat_index, name="chat-index"),
    path("chat/<uuid:conversation_id>/", views.chat_conversation, name="chat-conversation"),
]

api_urlpatterns = [
    path("messages/<uuid:pk>/feedback", api.MessageFeedbackView.as_view(), name="message-feedback"),
    path("responses/<uuid:pk>/feedback", api.ResponseFeedbackView.as_view(), name="response-feedback"),
]
