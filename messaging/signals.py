"""What messaging announces to the apps built on it.

`message_stored` is sent once per new message, after its transaction committed, with
`message` (a `Message` with `sender` and `recipient` loaded). It is never sent for a
retried send (same `client_id`) nor for a rolled-back one. Receivers must be quick
and must not raise: schedule work (a Celery task), don't do it inline.

`messages_read` is sent after commit when a user's read marker moves forward, with
`user_id`, `peer_id` and `up_to` (a message id).
"""

from django.dispatch import Signal

message_stored = Signal()
messages_read = Signal()
