"""Celery tasks of the notifications app, and how they are scheduled.

With a broker (`REDIS_URL`) the offline check is a Celery task with a countdown.
Embedded mode (no `REDIS_URL`) runs Celery eagerly, which would ignore the countdown
and run the check inside the sender's request, before anyone could come online or
read; there the check runs instead on a daemon `threading.Timer` in the web process
after the same delay, and retries the same way. Such timers are lost when the
process stops, which the single-process embedded mode accepts.
"""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from celery.signals import worker_init
from django.conf import settings
from django.db import close_old_connections, connections

from notifications import telegram
from notifications.services import notifications_process

logger = logging.getLogger(__name__)


@worker_init.connect
def _preload_telegram(**kwargs) -> None:
    # Importing aiogram takes seconds; pay it before the first task, not inside it.
    if telegram.is_configured():
        telegram.preload()


@shared_task(bind=True, acks_late=True, max_retries=None, name="notifications.notify_offline")
def notify_offline(self, recipient_id: int, sender_id: int, message_id: int) -> None:
    """Safe to run again (a retry, a redelivery after a killed worker): it claims no
    message twice and leaves a Bot API call in flight alone; a notification whose
    worker died during its call is sent again once that call has surely ended (at
    least once); see notifications.services."""
    retry_in = notifications_process(recipient_id=recipient_id, sender_id=sender_id, message_id=message_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


def notify_offline_schedule(*, recipient_id: int, sender_id: int, message_id: int, delay: float) -> None:
    """Run the offline check for a message in `delay` seconds. Never raises: a broker
    that is down costs a notification, not the message."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        _run_later(delay, recipient_id, sender_id, message_id)
        return
    try:
        notify_offline.apply_async(args=(recipient_id, sender_id, message_id), countdown=delay)
    except Exception:
        logger.exception("notify: could not schedule the check of message %s", message_id)


def _run_later(delay: float, recipient_id: int, sender_id: int, message_id: int) -> None:
    def run() -> None:
        close_old_connections()
        try:
            retry_in = notifications_process(recipient_id=recipient_id, sender_id=sender_id, message_id=message_id)
        except Exception:
            logger.exception("notify: the check of message %s failed", message_id)
            return
        finally:
            # This thread ends here; its connections would otherwise linger.
            connections.close_all()
        if retry_in is not None:
            _run_later(retry_in, recipient_id, sender_id, message_id)

    timer = threading.Timer(delay, run)
    timer.daemon = True
    timer.start()
