from django.db.models import QuerySet

from accounts.models import User
from notifications.models import Notification, TelegramLink


def telegram_link_get(*, user: User) -> TelegramLink | None:
    return TelegramLink.objects.filter(user=user).first()


def notification_list_recent(*, user: User, limit: int = 10) -> QuerySet[Notification]:
    return Notification.objects.filter(recipient=user).select_related("sender").order_by("-id")[:limit]
