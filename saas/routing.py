from django.urls import path

from accounts.consumers import NotificationsConsumer
from agents.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationsConsumer.as_asgi()),
    path("ws/chat/<uuid:conversation_id>/", ChatConsumer.as_asgi()),
]
