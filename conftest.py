"""Fixtures shared by every test module."""

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _clean_cache_and_presence():
    """Each test starts with an empty cache (throttle counters, history) and nobody online."""
    from django.core.cache import cache

    from accounts import presence
    from messaging import history

    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        get_redis_connection("default").flushdb()
    cache.clear()
    presence.presence_reset()
    history.history_cache_reset()
    yield


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def carol(db):
    return UserFactory(username="carol")


@pytest.fixture
def alice_client(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client
