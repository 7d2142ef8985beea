from django.urls import path

from messaging import api

urlpatterns = [
    path("conversations/", api.ConversationListView.as_view(), name="api-conversations"),
    path("conversations/<str:username>/messages/", api.MessagesView.as_view(), name="api-messages"),
    path("conversations/<str:username>/read/", api.ReadView.as_view(), name="api-read"),
]
