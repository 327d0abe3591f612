from django.urls import path

from accounts.consumers import NotificationsConsumer
from agents.consumers import ChatConsumer, RunConsumer
from documents.consumers import AskConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationsConsumer.as_asgi()),
    path("ws/chat/<uuid:conversation_id>/", ChatConsumer.as_asgi()),
    path("ws/ask/<uuid:org_id>/", AskConsumer.as_asgi()),
    path("ws/runs/<uuid:run_id>/", RunConsumer.as_asgi()),
]
