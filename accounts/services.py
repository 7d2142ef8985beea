"""Writes for accounts."""

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from accounts.models import User


def user_create(*, username: str, password: str, email: str = "") -> User:
    """Create an active user after Django's password validators and a case-insensitive
    uniqueness check ("Alice" and "alice" would be two people nobody can tell apart).

    Raises `ValidationError` with a dict of per-field messages.
    """
    username = User.normalize_username(username.strip())
    email = User.objects.normalize_email(email.strip()) if email else ""
    user = User(username=username, email=email)
    errors: dict[str, list[str]] = {}
    try:
        user.full_clean(exclude=["password"], validate_unique=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if username and User.objects.filter(username__iexact=username).exists():
        errors.setdefault("username", []).append("A user with that username already exists.")
    try:
        validate_password(password, user)
    except ValidationError as exc:
        errors.setdefault("password", []).extend(exc.messages)
    if errors:
        raise ValidationError(errors)
    user.set_password(password)
    with transaction.atomic():
        user.save()
    return user


def users_deactivate(*, users: QuerySet[User], keep: User | None = None) -> int:
    """Deactivate the active users among `users` (but `keep`, the one doing it), each
    with `save()`, never `QuerySet.update()`: whoever keeps state about a user hears of
    it from `post_save` (messaging closes their open sockets on every process). Returns
    how many were deactivated."""
    with transaction.atomic():
        chosen = users.filter(is_active=True)
        if keep is not None:
            chosen = chosen.exclude(pk=keep.pk)
        deactivated = list(chosen)
        for user in deactivated:
            user.is_active = False
            user.save(update_fields=["is_active"])
    return len(deactivated)
