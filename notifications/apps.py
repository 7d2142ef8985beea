import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from messaging.signals import message_stored

        message_stored.connect(_on_message_stored, dispatch_uid="notifications.message_stored")


def _on_message_stored(sender, message, **kwargs) -> None:
    # Read state needs no receiver: the offline check re-reads it when it runs.
    from notifications.services import notification_schedule

    try:
        notification_schedule(message=message)
    except Exception:
        # A receiver must not raise into a committed send.
        logger.exception("notify: scheduling the check of message %s failed", message.pk)
