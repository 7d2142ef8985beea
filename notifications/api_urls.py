from django.urls import path

from notifications import api

urlpatterns = [
    path("telegram/link/", api.TelegramLinkView.as_view(), name="api-telegram-link"),
]
