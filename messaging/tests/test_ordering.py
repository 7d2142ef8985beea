from messaging.ordering import InOrder


def event(message_id: int, prev: int) -> dict:
    return {"message": {"id": message_id}, "prev": prev}


def ids(events: list[dict]) -> list[int]:
    return [e["message"]["id"] for e in events]


def test_events_in_order_pass_straight_through():
    stream = InOrder(seen=10)
    assert ids(stream.offer(event(11, 10))) == [11]
    assert ids(stream.offer(event(15, 11))) == [15]
    assert not stream.waiting


def test_an_event_that_overtook_another_waits_for_it():
    stream = InOrder(seen=10)
    assert stream.offer(event(13, 12)) == []
    assert stream.waiting
    assert ids(stream.offer(event(12, 10))) == [12, 13]
    assert not stream.waiting and stream.seen == 13


def test_duplicates_and_old_events_are_dropped():
    stream = InOrder(seen=10)
    assert stream.offer(event(9, 5)) == []
    assert ids(stream.offer(event(11, 10))) == [11]
    assert stream.offer(event(11, 10)) == []


def test_advancing_past_a_gap_releases_what_waited():
    stream = InOrder(seen=10)
    stream.offer(event(14, 12))
    stream.offer(event(16, 14))
    assert ids(stream.advance(12)) == [14, 16]
    assert ids(stream.advance(11)) == []  # never goes back
    assert stream.seen == 16


def test_an_event_without_prev_is_delivered():
    stream = InOrder(seen=10)
    assert ids(stream.offer({"message": {"id": 12}})) == [12]
