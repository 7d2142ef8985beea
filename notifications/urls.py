from django.urls import path

from notifications import views

urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
    path("settings/telegram/link/", views.telegram_link, name="settings-telegram-link"),
    path("settings/telegram/unlink/", views.telegram_unlink, name="settings-telegram-unlink"),
    path("settings/notifications/", views.notifications_mute, name="settings-notifications-mute"),
]
