"""The PostgreSQL function that stores a batch of sends (migrations 0004, 0005)."""

import pytest
from django.db import connection

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def test_it_plans_its_statements_once_per_connection():
    """Custom plans made every call plan all its statements again (migration 0005);
    every store test of the suite runs through it with generic plans."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT proconfig FROM pg_proc WHERE proname = 'messaging_store_messages'")
        assert cursor.fetchall() == [(["plan_cache_mode=force_generic_plan"],)]
