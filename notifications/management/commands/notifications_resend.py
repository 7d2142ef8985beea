"""Re-run the offline check for notifications an outage left behind:

- notifications claimed but never delivered (a worker killed, the broker lost its
  task), and
- unread messages to linked, offline users that no check ever looked at (Redis lost
  the queued tasks).

    python manage.py notifications_resend            # schedule the checks on Celery
    python manage.py notifications_resend --inline   # run them here, now

Safe to run any time, as often as wanted: the check re-reads presence, read state and
mute, the watermark in PostgreSQL keeps any message from being claimed twice, and a
notification being sent right now is left alone. One left `sending` by a worker that
died during its Bot API call is sent again once that call has surely ended
(`sending_lease()`), as any check of its pair would: it may then arrive twice.
"""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from messaging.models import Message
from notifications.models import Notification, NotifiedWatermark, TelegramLink
from notifications.services import notifications_process
from notifications.tasks import notify_offline_schedule


class Command(BaseCommand):
    help = "Re-run the offline notification check for what an outage left behind."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--hours", type=float, default=24, help="look at messages this recent (default 24)")
        parser.add_argument("--inline", action="store_true", help="run the checks in this process, not on Celery")

    def handle(self, *args, hours: float, inline: bool, **options) -> None:
        if not settings.TELEGRAM_BOT_TOKEN:
            raise CommandError("TELEGRAM_BOT_TOKEN is not set: notifications are off.")
        now = timezone.now()
        # The grace period still runs for newer messages: their own checks are due.
        settled = now - timedelta(seconds=settings.NOTIFY_DELAY_SECONDS)
        pairs: dict[tuple[int, int], int] = {}

        # A claimed notification is delivered by any check of its pair.
        open_rows = Notification.objects.filter(status__in=[Notification.Status.PENDING, Notification.Status.SENDING])
        for recipient_id, sender_id, last_id in open_rows.values_list("recipient_id", "sender_id", "last_message_id"):
            pairs[(recipient_id, sender_id)] = last_id

        linked = TelegramLink.objects.filter(chat_id__isnull=False, muted=False).values_list("user_id", flat=True)
        recent = Message.objects.filter(
            recipient_id__in=linked, created_at__gte=now - timedelta(hours=hours), created_at__lte=settled
        )
        watermarks = {
            (w.recipient_id, w.sender_id): w.up_to for w in NotifiedWatermark.objects.filter(recipient_id__in=linked)
        }
        for recipient_id, sender_id in recent.values_list("recipient_id", "sender_id").distinct():
            key = (recipient_id, sender_id)
            # The check of a pair's oldest unhandled message takes in all later ones.
            oldest = (
                recent.filter(recipient_id=recipient_id, sender_id=sender_id, id__gt=watermarks.get(key, 0))
                .order_by("id")
                .values_list("id", flat=True)
                .first()
            )
            if oldest is not None and key not in pairs:
                pairs[key] = oldest

        for (recipient_id, sender_id), message_id in sorted(pairs.items()):
            if inline:
                notifications_process(recipient_id=recipient_id, sender_id=sender_id, message_id=message_id)
            else:
                notify_offline_schedule(recipient_id=recipient_id, sender_id=sender_id, message_id=message_id, delay=0)
        how = "checked" if inline else "scheduled"
        self.stdout.write(self.style.SUCCESS(f"{len(pairs)} conversation(s) {how}."))
