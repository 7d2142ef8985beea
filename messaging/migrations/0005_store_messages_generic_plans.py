"""`messaging_store_messages()` runs its statements with generic plans.

PL/pgSQL caches a plan per statement, but under the default `plan_cache_mode = auto`
PostgreSQL kept choosing custom plans for these (the array arguments make a custom
plan's estimate look cheaper), so every call planned all twelve statements again:
about 1.3 ms of PostgreSQL CPU per call, two thirds of a one-message send. Measured
per call on PostgreSQL 15 with 360,000 messages (backend CPU from /proc):

    batch of     1      3     64    200 messages
    custom     1.96   2.22   5.95   14.9 ms
    generic    0.68   1.13   6.8    17.3 ms

A migration that replaces the function (CREATE OR REPLACE drops its settings) must set
this again.
"""

from django.db import migrations

SIGNATURE = "messaging_store_messages(bigint[], bigint[], text[], text[])"


def generic(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")


def default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} RESET plan_cache_mode")


class Migration(migrations.Migration):
    dependencies = [("messaging", "0004_store_messages_function")]

    operations = [migrations.RunPython(generic, default)]
