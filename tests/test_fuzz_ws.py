"""Fuzzing the WebSocket protocol with Hypothesis, through the real ASGI application.

Whatever a client sends, the server never crashes: every reply is a frame of the
contract (an `error` with one of the contract's codes, or a legitimate answer), the
connection stays open and still answers `ping` with `pong` (a frame over 64 KiB is the
one exception: it closes with 1009), and nothing malformed is ever stored.

One socket is shared by all examples of a test (a handshake per example would spend
the time budget on token checks), on one event loop that outlives the examples.
`FUZZ_EXAMPLES` raises the example count and randomizes the run for a deeper search.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from accounts.models import User
from accounts.tests.factories import UserFactory
from messaging.consumers import MAX_FRAME_BYTES
from messaging.models import MAX_BODY_LENGTH, Message
from messaging.tests.ws import Client, connect

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

ERROR_CODES = {"bad_frame", "validation", "not_found", "rate_limited"}
FRAME_TYPES = ["send", "sync", "typing", "read", "ping", "auth", "ack", "message", "", "SEND", "send\x00"]
FIELDS = ["type", "to", "body", "client_id", "since", "peer", "up_to", "token", "__proto__", ""]
USERNAMES = ["alice", "bob", "carol", "ghost", "", " bob", "BOB", "bob\x00", "\x00", "\ud800", "b\udfffob", "é" * 200]

# Lone surrogates are not valid in UTF-8, so a real client can only send them escaped
# in the JSON text (`"\ud800"`), which `json.dumps` writes (ensure_ascii) and Python's
# parser accepts.
EDGE_STRINGS = [
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\ud83d",
    "\ud83d\ude00",
    "\u202e",
    "\ufeff",
    "\u200b",
    "\U0010ffff",
    "𝕏",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "9223372036854775808",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    " ",
    "\n\t",
]
HUGE_NUMBERS = [2**63, 2**63 - 1, -(2**63), -(2**70), 2**64, 10**30, -1, 0, 1]

characters = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udc00", "\u202e", "\ufeff"]))
texts = st.one_of(
    st.text(characters, max_size=50),
    st.sampled_from(EDGE_STRINGS),
    st.sampled_from(USERNAMES),
    # Long strings around the body limit and towards the frame limit; whether they fit
    # in 64 KiB depends on how they are escaped, and the test follows the real size.
    st.builds(
        lambda char, count: char * count,
        st.sampled_from(["x", "é", "😀", " ", "\x00", "\ud800"]),
        st.sampled_from([MAX_BODY_LENGTH - 1, MAX_BODY_LENGTH, MAX_BODY_LENGTH + 1, 10_000, 16_000, 21_000]),
    ),
)
numbers = st.one_of(st.integers(), st.sampled_from(HUGE_NUMBERS), st.floats())
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(FIELDS) | texts, children, max_size=4)
    ),
    max_leaves=12,
)


def _frame_fields(frame_type: str) -> st.SearchStrategy[dict]:
    """Frames that look like the real thing, with each field sometimes replaced."""
    likely = {
        "to": st.one_of(st.sampled_from(USERNAMES), json_values),
        "body": st.one_of(texts, json_values),
        "client_id": st.one_of(st.none(), texts, json_values),
        "since": st.one_of(numbers, json_values),
        "peer": st.one_of(st.sampled_from(USERNAMES), json_values),
        "up_to": st.one_of(numbers, json_values),
    }
    return st.fixed_dictionaries(
        {"type": st.just(frame_type)},
        optional={**likely, **{name: json_values for name in ("token", "extra", "__proto__")}},
    )


@st.composite
def deeply_nested(draw) -> str:
    depth = draw(st.sampled_from([10, 500, 1_000, 5_000, 20_000, 32_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = opener * depth + "1" + closer * depth
    return draw(st.sampled_from([inner, '{"type":"send","to":"bob","body":' + inner + "}"]))


json_frames = st.one_of(
    st.sampled_from(FRAME_TYPES).flatmap(_frame_fields),
    st.dictionaries(st.sampled_from(FIELDS) | texts, json_values, max_size=6),
    json_values,
)
raw_texts = st.one_of(
    st.text(characters, max_size=200),
    deeply_nested(),
    st.sampled_from(
        [
            "",
            "{",
            "null",
            '{"type": NaN}',
            '{"type": "sync", "since": NaN}',
            '{"type": "sync", "since": Infinity}',
            '{"type": "sync", "since": 1e999}',
            '{"type": "read", "peer": "bob", "up_to": -Infinity}',
            '{"type": "sync", "since": 99999999999999999999999999999999999999}',
            '{"type": "send", "to": "bob", "body": "\\ud800"}',
            '{"type": "send", "to": "bob", "body": "a\\u0000b"}',
            '{"type": "send", "to": "bob\\u0000", "body": "hi"}',
            '{"type": "typing", "to": "\\u0000"}',
            '{"type": "read", "peer": "\\udfff", "up_to": 1}',
            '{"type": "send", "type": "ping"}',
        ]
    ),
)


@st.composite
def frames(draw) -> str | bytes:
    """One client frame, as it goes over the wire: binary, or text that is valid UTF-8
    (the WebSocket server refuses anything else before the application sees it)."""
    kind = draw(st.sampled_from(["json", "json", "json", "raw", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=64))
    if kind == "raw":
        return draw(raw_texts).encode("utf-8", "replace").decode()
    value = draw(json_frames)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return text if _is_valid_text(text) else json.dumps(value)


# --- checks -------------------------------------------------------------------------


def _is_valid_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def assert_contract_message(message: dict) -> None:
    assert set(message) == {"id", "sender", "recipient", "body", "created_at", "client_id"}, message
    assert isinstance(message["id"], int) and message["id"] > 0
    assert message["sender"] != message["recipient"]
    assert _is_valid_text(message["body"]) and 1 <= len(message["body"]) <= MAX_BODY_LENGTH
    assert "\x00" not in message["body"]
    assert message["client_id"] is None or _is_valid_text(message["client_id"])


def assert_contract_frame(frame: object) -> None:
    """A frame the contract allows the server to send."""
    assert isinstance(frame, dict), frame
    kind = frame.get("type")
    if kind == "error":
        assert frame["code"] in ERROR_CODES, frame
        assert isinstance(frame["detail"], str) and frame["detail"]
        assert frame["client_id"] is None or isinstance(frame["client_id"], str)
        if frame["code"] == "rate_limited":
            assert isinstance(frame["retry_after"], int) and frame["retry_after"] >= 1
    elif kind == "ack":
        assert_contract_message(frame["message"])
        assert frame["client_id"] == frame["message"]["client_id"]
    elif kind == "message":
        assert_contract_message(frame["message"])
    elif kind == "synced":
        assert isinstance(frame["last_id"], int) and isinstance(frame["more"], bool)
    elif kind in ("typing", "read", "presence"):
        assert set(frame) - {"type"}, frame
    else:
        assert kind == "pong", frame


def assert_nothing_malformed_is_stored() -> None:
    user_ids = set(User.objects.values_list("id", flat=True))
    for sender_id, recipient_id, body in Message.objects.values_list("sender_id", "recipient_id", "body"):
        assert sender_id in user_ids and recipient_id in user_ids and sender_id != recipient_id
        assert 1 <= len(body) <= MAX_BODY_LENGTH and "\x00" not in body and body.strip()
        body.encode("utf-8")


# --- the harness --------------------------------------------------------------------


class Session:
    """Alice's socket on a loop that lives across Hypothesis examples; reopened after a
    1009 close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, user: User) -> None:
        self.loop, self.user = loop, user
        self.client: Client | None = None
        self.marker = 10**12

    def run(self, coroutine):
        try:
            return self.loop.run_until_complete(asyncio.wait_for(coroutine, 20))
        except BaseException:
            # Whatever the failed example left unread must not confuse the next one.
            client, self.client = self.client, None
            if client is not None:
                with contextlib.suppress(BaseException):
                    self.loop.run_until_complete(asyncio.wait_for(client.close(), 5))
            raise

    async def socket(self) -> Client:
        if self.client is None:
            self.client = await connect(self.user)
        return self.client

    async def exchange(self, frame: str | bytes) -> list[dict]:
        """Send the frame, then a ping; return every frame before the pong."""
        client = await self.socket()
        # `send_input`, not `send_to`, which refuses an empty frame that a client can send.
        key = "bytes" if isinstance(frame, bytes) else "text"
        await client.ws.send_input({"type": "websocket.receive", key: frame})
        too_big = isinstance(frame, str) and len(frame.encode()) > MAX_FRAME_BYTES
        if too_big:
            assert await client.ws.receive_output(5) == {"type": "websocket.close", "code": 1009}
            await self.close()  # what the server does after the closing handshake
            return []
        # A ping, then a sync whose `synced` answer marks the end of this exchange
        # (the fuzzed frame may itself be a ping).
        self.marker += 1
        await client.send({"type": "ping"})
        await client.send({"type": "sync", "since": self.marker})
        replies = []
        while True:
            output = await client.ws.receive_output(5)
            assert output["type"] == "websocket.send", f"the connection closed: {output}"
            assert "text" in output and output.get("bytes") is None, output
            assert _is_valid_text(output["text"]), "the server sent text that is not valid UTF-8"
            reply = json.loads(output["text"], parse_constant=_no_constants)
            assert_contract_frame(reply)
            if reply == {"type": "synced", "last_id": self.marker, "more": False}:
                break
            replies.append(reply)
        assert replies[-1:] == [{"type": "pong"}], "no pong after the frame"
        return replies[:-1]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


def _short(frame: str | bytes) -> str:
    return repr(frame) if len(frame) < 300 else f"{frame[:150]!r}...{frame[-100:]!r} ({len(frame)} long)"


def _no_constants(name: str):
    raise AssertionError(f"the server sent {name}, which is not JSON")


@pytest.fixture
def session(alice, bob, carol, settings) -> Iterator[Session]:
    # The rate limit answers `rate_limited`, a contract frame; a high one lets sends
    # reach the database, which is where garbage would be stored.
    settings.CHAT_RATE_LIMIT = (100_000, 10)
    loop = asyncio.new_event_loop()
    fuzzing = Session(loop, alice)
    try:
        yield fuzzing
    finally:
        loop.run_until_complete(fuzzing.close())
        # The server's own tasks (delivery, send batching, presence sweep) end with the loop.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


@FUZZ
@given(frame=frames())
# Found by deeper runs (FUZZ_EXAMPLES=1000), kept for every run:
@example(frame='{"type": []}')  # an unhashable type crashed the consumer
@example(frame='{"type": {"a": 1}}')
@example(frame='{"type": "send", "to": "bob", "body": 1, "client_id": "\\ud800"}')  # echoed unencodable
@example(frame="[" * 5000 + "]" * 5000)  # RecursionError crashed the consumer
@example(frame='{"type":' + "[" * 985 + "]" * 985 + "}")  # parsed, but too deep to print in the error
def test_random_frames_get_contract_answers_and_the_connection_stays_usable(session, frame):
    note(f"frame: {_short(frame)}")
    session.run(session.exchange(frame))
    assert_nothing_malformed_is_stored()


@FUZZ
@given(body=st.text(characters, min_size=1, max_size=MAX_BODY_LENGTH + 5), to=st.sampled_from(USERNAMES))
def test_any_send_is_stored_verbatim_or_refused_and_never_stored_malformed(session, body, to):
    frame = json.dumps({"type": "send", "to": to, "body": body, "client_id": None})
    replies = session.run(session.exchange(frame))
    acks = [r for r in replies if r["type"] == "ack"]
    errors = [r for r in replies if r["type"] == "error"]
    assert len(acks) + len(errors) == 1, replies
    valid = to in ("bob", "carol") and body.strip() and len(body) <= MAX_BODY_LENGTH and _is_valid_text(body)
    if acks:
        assert valid and "\x00" not in body
        assert acks[0]["message"]["body"] == body and acks[0]["message"]["recipient"] == to
    elif valid and "\x00" not in body:
        raise AssertionError(f"a good send was refused: {errors[0]}")
    assert_nothing_malformed_is_stored()


@pytest.mark.parametrize(("size", "closed"), [(MAX_FRAME_BYTES, False), (MAX_FRAME_BYTES + 1, True)])
def test_the_frame_limit_is_exactly_64_kib_of_utf8(session, size, closed):
    prefix = '{"type":"ping","pad":"'
    frame = prefix + "x" * (size - len(prefix) - 2) + '"}'
    assert len(frame.encode()) == size
    replies = session.run(session.exchange(frame))
    assert replies == ([] if closed else [{"type": "pong"}])
    assert (session.client is None) is closed


def test_numbers_the_server_cannot_store_are_refused_or_harmless(session):
    for since in (2**63, 2**63 - 1, 2**64 - 1):
        replies = session.run(session.exchange(json.dumps({"type": "sync", "since": since})))
        assert replies == [{"type": "synced", "last_id": since, "more": False}]
    # Beyond 64 bits the frame parser (orjson) reads a float: not a message id.
    for value in (2**64, 10**30, -(2**70), -1, 1.5, math.inf):
        replies = session.run(session.exchange(json.dumps({"type": "sync", "since": value})))
        assert [r["code"] for r in replies] == ["validation"]
    replies = session.run(session.exchange(json.dumps({"type": "read", "peer": "bob", "up_to": 2**63})))
    assert [r["code"] for r in replies] == ["not_found"]  # alice never talked to bob
    replies = session.run(session.exchange(json.dumps({"type": "read", "peer": "bob", "up_to": 2**64})))
    assert [r["code"] for r in replies] == ["validation"]


def test_a_bad_send_in_a_batch_does_not_fail_the_good_ones(session, bob):
    """Sends that arrive together are stored in one transaction: a send the database
    cannot take must fail alone, not take the others down with it."""
    carol_user = UserFactory(username="dave")

    async def scenario() -> tuple[list[dict], list[dict]]:
        alice_ws, dave_ws = await session.socket(), await connect(carol_user)
        await asyncio.gather(
            alice_ws.send({"type": "send", "to": "bob\x00", "body": "poison", "client_id": "bad"}),
            dave_ws.send({"type": "send", "to": "bob", "body": "innocent", "client_id": "good"}),
            alice_ws.send({"type": "send", "to": "bob", "body": "\ud800", "client_id": "bad-2"}),
        )
        alice_replies = [await alice_ws.recv_type("error"), await alice_ws.recv_type("error")]
        dave_replies = [await dave_ws.recv_type("ack")]
        await dave_ws.close()
        return alice_replies, dave_replies

    alice_replies, dave_replies = session.run(scenario())
    assert {r["client_id"] for r in alice_replies} == {"bad", "bad-2"}
    assert {r["code"] for r in alice_replies} <= {"validation", "not_found"}
    assert dave_replies[0]["message"]["body"] == "innocent"
    assert_nothing_malformed_is_stored()
