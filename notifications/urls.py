from django.urls import path

from notifications import views

urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
]
