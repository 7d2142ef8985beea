"""Keeps the history cache true when a message changes outside `message_send`
(admin edits and deletions, cascades from a deleted user)."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from messaging import history
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
