"""Fill a database with demo users and conversations, for trying the messenger out
and for benchmarks:

    python manage.py seed_demo --users 50 --messages 20 --password demo-password-1

Users are named demo1..demoN and share one password. Messages are written straight
to the database (no delivery, no notifications); running it again adds nothing twice
for users that exist and appends new messages.
"""

import random

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Max

from accounts.models import User
from messaging.models import Conversation, Message
from messaging.services import conversation_get_or_create, delivery_cursors_rebuild

LINES = [
    "Hi! How are you?",
    "Did you see the release notes?",
    "Lunch at noon?",
    "I pushed the fix, can you review?",
    "Sounds good 👍",
    "Running a bit late, sorry.",
    "Let's talk tomorrow.",
    "Thanks, that helped a lot!",
]


class Command(BaseCommand):
    help = "Create demo users (demo1..demoN) and conversations between them."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--users", type=int, default=20)
        parser.add_argument("--conversations", type=int, default=3, help="conversations per user")
        parser.add_argument("--messages", type=int, default=10, help="messages per conversation")
        parser.add_argument("--password", default="demo-password-1")
        parser.add_argument("--prefix", default="demo")
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, users: int, conversations: int, messages: int, password: str, prefix: str, seed: int, **o):
        if users < 2:
            raise CommandError("--users must be at least 2")
        rng = random.Random(seed)
        password_hash = make_password(password)
        names = [f"{prefix}{i}" for i in range(1, users + 1)]
        existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        User.objects.bulk_create(
            [
                User(username=name, password=password_hash, email=f"{name}@example.com")
                for name in names
                if name not in existing
            ]
        )
        people = list(User.objects.filter(username__in=names).order_by("id"))
        pairs = set()
        for person in people:
            for peer in rng.sample([p for p in people if p.pk != person.pk], min(conversations, len(people) - 1)):
                pairs.add(tuple(sorted((person.pk, peer.pk))))
        by_id = {p.pk: p for p in people}
        created = 0
        for low, high in sorted(pairs):
            with transaction.atomic():
                conversation = conversation_get_or_create(user=by_id[low], peer=by_id[high])
                rows = []
                for _ in range(messages):
                    sender, recipient = (by_id[low], by_id[high]) if rng.random() < 0.5 else (by_id[high], by_id[low])
                    rows.append(
                        Message(conversation=conversation, sender=sender, recipient=recipient, body=rng.choice(LINES))
                    )
                Message.objects.bulk_create(rows)
                created += len(rows)
                newest = Message.objects.filter(conversation=conversation).aggregate(m=Max("id"))["m"]
                Conversation.objects.filter(pk=conversation.pk).update(last_message_id=newest)
        delivery_cursors_rebuild(user_ids=[p.pk for p in people])
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(people)} demo users ({users - len(existing)} new), {len(pairs)} conversations, "
                f"{created} messages. Log in as {names[0]} / {password}"
            )
        )
