"""The PostgreSQL function that stores a batch of sends (migrations 0004, 0005)."""

import pytest
from django.db import connection

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def test_it_plans_its_statements_once_per_connection_with_index_scans():
    """Custom plans made every call plan all its statements again, and small tables
    were scanned whole (migration 0005); every store test of the suite runs through it
    with these settings."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT proconfig FROM pg_proc WHERE proname = 'messaging_store_messages'")
        assert cursor.fetchall() == [(["plan_cache_mode=force_generic_plan", "enable_seqscan=off"],)]


def test_a_send_outside_a_transaction_is_one_statement_and_announced_after_it(alice, bob):
    """No BEGIN and COMMIT round trips around the call: it is its own transaction, and
    what runs after commit runs once it returned."""
    from unittest import mock

    from messaging.models import Message
    from messaging.services import SendRequest, message_send_many
    from messaging.signals import message_stored

    announced = []

    def receiver(sender, message, **kwargs):
        announced.append((message.pk, connection.in_atomic_block))

    message_stored.connect(receiver, dispatch_uid="test_one_statement")
    try:
        with mock.patch.object(connection, "commit", wraps=connection.commit) as commit:
            [result] = message_send_many(requests=[SendRequest(alice, "bob", "hello")])
    finally:
        message_stored.disconnect(dispatch_uid="test_one_statement")
    assert commit.call_count == 0
    assert connection.get_autocommit()
    assert announced == [(result.message.pk, False)]
    assert Message.objects.filter(pk=result.message.pk, body="hello").exists()


def test_a_send_inside_a_transaction_is_announced_at_its_commit(alice, bob):
    from django.db import transaction

    from messaging.services import SendRequest, message_send_many
    from messaging.signals import message_stored

    announced = []
    message_stored.connect(
        lambda sender, message, **kw: announced.append(message.pk), weak=False, dispatch_uid="test_inside"
    )
    try:
        with transaction.atomic():
            [result] = message_send_many(requests=[SendRequest(alice, "bob", "hello")])
            assert announced == []
    finally:
        message_stored.disconnect(dispatch_uid="test_inside")
    assert announced == [result.message.pk]
