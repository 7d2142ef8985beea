"""Keeps derived state true when rows change outside the services: the history cache
when a message is edited or deleted (admin, cascades), and open sockets when an
account is deactivated or deleted (they are closed at once, on every server process).

Signals are not sent by `QuerySet.update()` or raw SQL: an account deactivated that
way keeps its open sockets (new ones are refused) until they close.
"""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import User
from messaging import history
from messaging.delivery import deliver
from messaging.models import Message


def _drop(conversation_id: int) -> None:
    transaction.on_commit(lambda: history.history_cached_drop(conversation_id=conversation_id))


@receiver(post_save, sender=Message, dispatch_uid="history_drop_on_edit")
def _message_edited(sender, instance: Message, created: bool, **kwargs) -> None:
    if not created:
        _drop(instance.conversation_id)


@receiver(post_delete, sender=Message, dispatch_uid="history_drop_on_delete")
def _message_deleted(sender, instance: Message, **kwargs) -> None:
    _drop(instance.conversation_id)


def _disconnect(user_id: int) -> None:
    transaction.on_commit(lambda: deliver(user_ids=[user_id], event={"type": "chat.disconnect"}))


@receiver(post_save, sender=User, dispatch_uid="disconnect_deactivated_user")
def _user_saved(sender, instance: User, created: bool, **kwargs) -> None:
    if not created and not instance.is_active:
        _disconnect(instance.pk)


@receiver(post_delete, sender=User, dispatch_uid="disconnect_deleted_user")
def _user_deleted(sender, instance: User, **kwargs) -> None:
    _disconnect(instance.pk)
