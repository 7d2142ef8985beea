"""Reads for accounts."""

from django.db.models import QuerySet

from accounts.models import User


def user_list(*, viewer: User, search: str = "") -> QuerySet[User]:
    """Everyone the viewer can message: active users other than themselves."""
    users = User.objects.filter(is_active=True).exclude(pk=viewer.pk)
    search = search.strip()
    if "\x00" in search:  # no name has one, and PostgreSQL refuses NUL in a query
        return users.none()
    if search:
        users = users.filter(username__icontains=search)
    return users.order_by("username")


def user_get_active(*, username: str) -> User | None:
    if "\x00" in username:  # no name has one, and PostgreSQL refuses NUL in a query
        return None
    return User.objects.filter(username=username, is_active=True).first()
