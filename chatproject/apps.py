from django.apps import AppConfig


class ChatProjectConfig(AppConfig):
    """The project package as an app, for its wiring-level management commands."""

    name = "chatproject"
    verbose_name = "Messenger"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from chatproject.db import use_recent_check

        connection_created.connect(use_recent_check, dispatch_uid="chatproject.db.use_recent_check")
