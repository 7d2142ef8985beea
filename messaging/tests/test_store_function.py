"""The PostgreSQL function that stores a batch of sends (migrations 0004, 0005)."""

import pytest
from django.db import connection

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def test_it_plans_its_statements_once_per_connection_with_index_scans():
    """Custom plans made every call plan all its statements again, and small tables
    were scanned whole (migration 0005); every store test of the suite runs through it
    with these settings."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT proconfig FROM pg_proc WHERE proname = 'messaging_store_messages'")
        assert cursor.fetchall() == [(["plan_cache_mode=force_generic_plan", "enable_seqscan=off"],)]
