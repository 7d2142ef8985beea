from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person who chats. Whether they are online is not stored here but in
    `accounts.presence`, which follows their live connections; `last_seen` is when
    their last connection went away."""

    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        ordering = ["username"]
