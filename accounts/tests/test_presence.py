import time

import pytest

from accounts import presence
from accounts.models import User

pytestmark = pytest.mark.django_db


def test_first_connection_brings_a_user_online(alice):
    assert presence.presence_connect(user_id=alice.pk, connection_id="a") is True
    assert presence.is_online(alice.pk)


def test_closing_one_of_two_tabs_keeps_the_user_online(alice):
    presence.presence_connect(user_id=alice.pk, connection_id="tab-1")
    assert presence.presence_connect(user_id=alice.pk, connection_id="tab-2") is False
    assert presence.presence_disconnect(user_id=alice.pk, connection_id="tab-1") is False
    assert presence.is_online(alice.pk)
    assert presence.presence_disconnect(user_id=alice.pk, connection_id="tab-2") is True
    assert not presence.is_online(alice.pk)
    alice.refresh_from_db()
    assert alice.last_seen is not None


def test_a_connection_that_is_never_closed_expires_and_is_swept_once(alice, bob, settings):
    settings.PRESENCE_TIMEOUT_SECONDS = 1
    presence.presence_connect(user_id=alice.pk, connection_id="dead-process")
    presence.presence_connect(user_id=bob.pk, connection_id="alive")
    time.sleep(1.1)
    presence.presence_heartbeat(user_id=bob.pk, connection_id="alive")
    assert presence.online_user_ids([alice.pk, bob.pk]) == {bob.pk}
    assert presence.presence_sweep() == [alice.pk]
    assert presence.presence_sweep() == []
    assert User.objects.get(pk=alice.pk).last_seen is not None
    assert User.objects.get(pk=bob.pk).last_seen is None


def test_heartbeat_after_expiry_reports_coming_back_online(alice, settings):
    settings.PRESENCE_TIMEOUT_SECONDS = 1
    presence.presence_connect(user_id=alice.pk, connection_id="c")
    time.sleep(1.1)
    assert presence.presence_heartbeat(user_id=alice.pk, connection_id="c") is True
    assert presence.presence_heartbeat(user_id=alice.pk, connection_id="c") is False
    assert presence.is_online(alice.pk)


def test_nobody_is_online_by_default(alice, bob):
    assert presence.online_user_ids([alice.pk, bob.pk]) == set()
    assert presence.online_user_ids([]) == set()
