from django.apps import AppConfig


class ChatProjectConfig(AppConfig):
    """The project package as an app, for its wiring-level management commands."""

    name = "chatproject"
    verbose_name = "Messenger"
