"""The recent-history cache is never stale and never missing a message."""

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from messaging import history
from messaging.models import Conversation, Message
from messaging.serializers import message_dict
from messaging.services import message_send

pytestmark = pytest.mark.django_db(transaction=True)


def newest(user, peer, **params):
    client = APIClient()
    client.force_authenticate(user)
    return client.get(reverse("api-messages", args=[peer.username]), params).json()


def say(sender, to, body):
    return message_send(sender=sender, recipient_username=to.username, body=body).message


def conversation_of(alice, bob):
    return Conversation.objects.get(user_low=min(alice, bob, key=lambda u: u.pk))


def test_the_newest_page_comes_from_the_cache_once_filled(alice, bob, django_assert_num_queries):
    say(alice, bob, "one")
    first = newest(alice, bob)
    assert [m["body"] for m in first["results"]] == ["one"]
    client = APIClient()
    client.force_authenticate(alice)
    # the peer with the conversation's id; no message query
    with django_assert_num_queries(1):
        cached = client.get(reverse("api-messages", args=["bob"])).json()
    assert cached == first


def test_a_send_updates_the_cached_page(alice, bob):
    say(alice, bob, "one")
    newest(alice, bob)
    say(bob, alice, "two")
    assert [m["body"] for m in newest(alice, bob)["results"]] == ["two", "one"]


def test_the_cache_keeps_only_the_newest_page_and_older_pages_come_from_the_database(alice, bob, settings):
    settings.CHAT_RATE_LIMIT = (1000, 10)
    sent = [say(alice, bob, str(i)) for i in range(history.HISTORY_CACHE_SIZE + 5)]
    newest(alice, bob)
    extra = say(alice, bob, "latest")
    page = newest(alice, bob)
    assert [m["id"] for m in page["results"]] == [extra.pk] + [m.pk for m in sent[: -history.HISTORY_CACHE_SIZE : -1]]
    assert page["next"]
    client = APIClient()
    client.force_authenticate(alice)
    older = client.get(page["next"]).json()
    assert [m["id"] for m in older["results"]] == [m.pk for m in sent[-history.HISTORY_CACHE_SIZE :: -1]]


def test_after_redis_is_flushed_history_refills_from_the_database(alice, bob, settings):
    say(alice, bob, "one")
    newest(alice, bob)
    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        get_redis_connection("default").flushdb()
    else:
        history.history_cache_reset()
    say(alice, bob, "two")  # must not start a partial entry holding only "two"
    assert [m["body"] for m in newest(alice, bob)["results"]] == ["two", "one"]


def test_a_send_that_commits_during_a_fill_is_not_lost(alice, bob):
    say(alice, bob, "before")
    conversation = conversation_of(alice, bob)
    late = {}

    def load(after_id):
        rows = [message_dict(m) for m in Message.objects.filter(conversation=conversation, id__gt=after_id)]
        if not late:
            # Another process commits a message now and finds no entry to add it to.
            late["message"] = say(bob, alice, "during the fill")
        return rows

    result = history.history_recent(conversation_id=conversation.pk, load=load)
    assert [m["body"] for m in result] == ["during the fill", "before"]
    assert [m["body"] for m in newest(alice, bob)["results"]] == ["during the fill", "before"]


def test_editing_or_deleting_a_message_drops_the_cached_page(alice, bob):
    keep = say(alice, bob, "keep")
    gone = say(alice, bob, "gone")
    newest(alice, bob)
    Message.objects.filter(pk=keep.pk).update(body="x")  # bypasses signals: not how the app edits
    edited = Message.objects.get(pk=keep.pk)
    edited.body = "edited"
    edited.save()
    gone.delete()
    assert [m["body"] for m in newest(alice, bob)["results"]] == ["edited"]


@pytest.mark.stack
def test_a_cache_left_by_another_database_with_the_same_ids_is_not_read(alice, bob, monkeypatch):
    """A restored backup or a database made again has the same conversation ids; the
    entries the old one left in Redis (here: under another epoch) are not its."""
    say(alice, bob, "before the restore")
    newest(alice, bob)  # cached
    with connection.cursor() as cursor:
        cursor.execute("SELECT oid FROM pg_class WHERE relname = %s", [Message._meta.db_table])
        (oid,) = cursor.fetchone()
        cursor.execute("SELECT applied FROM django_migrations WHERE app = 'messaging' AND name = '0001_initial'")
        (applied,) = cursor.fetchone()
        # The restore: the same conversation without that message, behind the app's back.
        cursor.execute(f"UPDATE {Conversation._meta.db_table} SET last_message_id = NULL")
        cursor.execute(f"DELETE FROM {Message._meta.db_table}")
    epoch = history._database_epoch()
    assert epoch == f"{oid}.{applied.timestamp():.6f}"
    assert history._backend().prefix == f"chat:history:{epoch}:"
    monkeypatch.setattr(history, "_database_epoch", lambda: f"{oid + 1}.{applied.timestamp():.6f}")
    history.history_cache_reset()
    say(alice, bob, "after the restore")
    assert [m["body"] for m in newest(alice, bob)["results"]] == ["after the restore"]


def test_the_cache_epoch_changes_with_a_database_migrated_anew():
    """A new database (or cluster: its OIDs start over) was migrated at another time."""
    from django.db.migrations.recorder import MigrationRecorder

    first = MigrationRecorder.Migration.objects.filter(app="messaging", name="0001_initial")
    applied = first.get().applied
    before = history._database_epoch()
    try:
        first.update(applied=applied + timedelta(days=1))
        assert history._database_epoch() != before
    finally:
        first.update(applied=applied)
    assert history._database_epoch() == before
