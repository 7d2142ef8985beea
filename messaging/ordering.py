"""Putting one user's stream of messages back in commit order.

Messages are published after commit by whichever server process stored them, so two
messages of one user stored by two processes can reach a socket in the wrong order,
and a message can be lost in transit (Redis restarted, the storing process killed
between commit and publish). Every message in a user's event carries the id of that
user's previous message (`prev`, from `DeliveryCursor`). A socket that has delivered
everything up to `seen` delivers an event whose `prev` is at most `seen`, and holds
one whose `prev` is newer until the message in between arrives, or until the consumer
fills the gap from PostgreSQL.
"""

from __future__ import annotations


class InOrder:
    def __init__(self, *, seen: int) -> None:
        self.seen = seen
        self.held: dict[int, dict] = {}

    @staticmethod
    def _prev(event: dict) -> int:
        return event.get("prev") or 0

    def offer(self, event: dict) -> list[dict]:
        """The events to deliver now, in order (this one and any it released)."""
        message_id = event["message"]["id"]
        if message_id <= self.seen:
            return []  # delivered already (by a gap fill or a sync)
        if self._prev(event) > self.seen:
            self.held[message_id] = event
            return []
        self.seen = message_id
        return [event, *self._release()]

    def advance(self, seen: int) -> list[dict]:
        """Everything up to `seen` was delivered another way; returns the held events
        that can follow now."""
        self.seen = max(self.seen, seen)
        return self._release()

    def _release(self) -> list[dict]:
        released = []
        for message_id in sorted(self.held):
            event = self.held[message_id]
            if message_id <= self.seen:
                del self.held[message_id]
            elif self._prev(event) <= self.seen:
                del self.held[message_id]
                self.seen = message_id
                released.append(event)
            else:
                break
        return released

    @property
    def waiting(self) -> bool:
        """Whether some message is held back, waiting for one before it."""
        return bool(self.held)
