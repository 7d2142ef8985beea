import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import presence
from accounts.tests.factories import UserFactory
from messaging.models import Message
from messaging.serializers import message_dict
from messaging.services import conversation_mark_read, message_send

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def say(sender, to, body, client_id=None):
    return message_send(sender=sender, recipient_username=to.username, body=body, client_id=client_id).message


def messages_url(username):
    return reverse("api-messages", args=[username])


def test_conversations_are_listed_most_recent_first_with_unread_and_read_state(alice, bob, carol):
    presence.presence_connect(user_id=carol.pk, connection_id="c")
    first = say(bob, alice, "from bob")
    say(bob, alice, "again from bob")
    say(alice, carol, "to carol")
    reply = say(carol, alice, "carol replies")
    conversation_mark_read(user=carol, peer_username="alice", up_to=reply.pk)
    body = client_for(alice).get(reverse("api-conversations")).json()
    assert body["next"] is None
    carol_row, bob_row = body["results"]
    assert carol_row["peer"]["username"] == "carol" and carol_row["peer"]["online"] is True
    assert carol_row["last_message"]["body"] == "carol replies"
    assert carol_row["unread_count"] == 1
    assert carol_row["peer_read_up_to"] == reply.pk
    assert bob_row["peer"] == {"id": bob.pk, "username": "bob", "online": False, "last_seen": None}
    assert bob_row["unread_count"] == 2 and bob_row["peer_read_up_to"] == first.pk + 1
    conversation_mark_read(user=alice, peer_username="bob", up_to=first.pk)
    bob_row = client_for(alice).get(reverse("api-conversations")).json()["results"][1]
    assert bob_row["unread_count"] == 1


def test_the_conversation_list_takes_the_same_number_of_queries_for_many_conversations(alice):
    def count_queries() -> int:
        client = client_for(alice)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("api-conversations")).status_code == 200
        return len(queries)

    say(UserFactory(), alice, "one")
    few = count_queries()
    for _ in range(12):
        say(UserFactory(), alice, "more")
    assert count_queries() == few
    assert few <= 2


def test_the_conversation_list_paginates(alice):
    peers = [UserFactory() for _ in range(5)]
    for peer in peers:
        say(peer, alice, "hi")
    client = client_for(alice)
    page = client.get(reverse("api-conversations"), {"page_size": 3}).json()
    rest = client.get(page["next"]).json()
    names = [row["peer"]["username"] for row in page["results"] + rest["results"]]
    assert names == [p.username for p in reversed(peers)]
    assert rest["next"] is None


def test_history_is_newest_first_and_follows_next_to_older_pages(alice, bob):
    sent = [say(alice if i % 2 else bob, bob if i % 2 else alice, f"m{i}") for i in range(7)]
    client = client_for(alice)
    page = client.get(messages_url("bob"), {"page_size": 3}).json()
    assert [m["id"] for m in page["results"]] == [m.pk for m in sent[:-4:-1]]
    seen = list(page["results"])
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += page["results"]
    assert [m["id"] for m in seen] == [m.pk for m in reversed(sent)]
    assert set(seen[0]) == {"id", "sender", "recipient", "body", "created_at", "client_id"}
    # Pages read from the database (`before`) and from the cache say the same as the
    # message itself, to the microsecond.
    assert seen == [message_dict(m) for m in reversed(sent)]


def test_history_with_someone_never_talked_to_is_empty_and_unknown_users_are_404(alice, bob):
    client = client_for(alice)
    assert client.get(messages_url("bob")).json() == {"results": [], "next": None}
    response = client.get(messages_url("ghost"))
    assert response.status_code == 404 and "detail" in response.json()


def test_nobody_reads_a_conversation_they_are_not_in(alice, bob, carol):
    say(alice, bob, "private")
    # carol can only ever ask for her own conversations, named by the other person
    assert client_for(carol).get(messages_url("bob")).json()["results"] == []
    assert client_for(carol).get(messages_url("alice")).json()["results"] == []
    assert APIClient().get(messages_url("bob")).status_code == 401


def test_send_over_rest_answers_201_with_the_message_and_is_idempotent(alice, bob):
    client = client_for(alice)
    response = client.post(messages_url("bob"), {"body": "hi", "client_id": "r-1"}, format="json")
    assert response.status_code == 201
    message = response.json()
    assert message["sender"] == "alice" and message["recipient"] == "bob" and message["client_id"] == "r-1"
    again = client.post(messages_url("bob"), {"body": "hi", "client_id": "r-1"}, format="json")
    assert again.status_code == 201 and again.json() == message
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    ("to", "data", "status", "field"),
    [
        ("bob", {}, 400, "body"),
        ("bob", {"body": ""}, 400, "body"),
        ("bob", {"body": "x" * 4001}, 400, "body"),
        ("bob", {"body": "   "}, 400, "detail"),
        ("alice", {"body": "me"}, 400, "detail"),
        ("ghost", {"body": "hi"}, 404, "detail"),
    ],
)
def test_bad_sends_over_rest_get_clear_errors(alice, bob, to, data, status, field):
    response = client_for(alice).post(messages_url(to), data, format="json")
    assert response.status_code == status
    assert field in response.json()
    assert not Message.objects.exists()


def test_rest_and_websocket_share_the_rate_limit(alice, bob, settings):
    settings.CHAT_RATE_LIMIT = (2, 10)
    client = client_for(alice)
    for i in range(2):
        assert client.post(messages_url("bob"), {"body": str(i)}, format="json").status_code == 201
    response = client.post(messages_url("bob"), {"body": "late"}, format="json")
    assert response.status_code == 429 and 1 <= int(response["Retry-After"]) <= 10
    assert "detail" in response.json()


def test_read_moves_the_marker_and_is_clamped_to_existing_messages(alice, bob):
    message = say(bob, alice, "hi")
    client = client_for(alice)
    assert (
        client.post(reverse("api-read", args=["bob"]), {"up_to": message.pk + 1000}, format="json").status_code == 204
    )
    row = client.get(reverse("api-conversations")).json()["results"][0]
    assert row["unread_count"] == 0
    bob_row = client_for(bob).get(reverse("api-conversations")).json()["results"][0]
    assert bob_row["peer_read_up_to"] == message.pk


def test_read_errors(alice, bob):
    client = client_for(alice)
    assert client.post(reverse("api-read", args=["bob"]), {"up_to": 1}, format="json").status_code == 404
    assert client.post(reverse("api-read", args=["bob"]), {"up_to": "x"}, format="json").status_code == 400


def test_bad_query_parameters_are_400(alice, bob):
    client = client_for(alice)
    assert client.get(messages_url("bob"), {"before": "abc"}).status_code == 400
    assert client.get(messages_url("bob"), {"page_size": 0}).status_code == 400
    assert client.get(messages_url("bob"), {"page_size": 500}).status_code == 400


def _bearer(user) -> APIClient:
    from rest_framework_simplejwt.tokens import AccessToken

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


def test_a_cached_history_page_by_token_is_one_query(alice, bob):
    """The token's user and the conversation are read together
    (messaging.selectors.user_with_conversation); the page comes from the cache."""
    sent = say(alice, bob, "hello")
    client = _bearer(alice)
    assert [m["id"] for m in client.get(messages_url("bob")).json()["results"]] == [sent.pk]  # fills the cache
    with CaptureQueriesContext(connection) as queries:
        page = client.get(messages_url("bob")).json()
    assert [m["body"] for m in page["results"]] == ["hello"]
    assert len(queries) == 1


def test_history_by_token_answers_as_by_session_for_every_kind_of_peer(alice, bob, carol):
    say(alice, bob, "hello")
    UserFactory(username="gone", is_active=False)
    for name in ("bob", "carol", "alice", "gone", "ghost", "nul\x00name"):
        by_token = _bearer(alice).get(messages_url(name))
        by_session = client_for(alice).get(messages_url(name))
        assert (by_token.status_code, by_token.json()) == (by_session.status_code, by_session.json()), name
    assert _bearer(alice).get(messages_url("carol")).json() == {"results": [], "next": None}
    assert _bearer(alice).get(messages_url("gone")).status_code == 404
