"""`messaging_store_messages()` runs its statements with generic plans, and with index
scans where there is an index.

PL/pgSQL caches a plan per statement, but under the default `plan_cache_mode = auto`
PostgreSQL kept choosing custom plans for these (the array arguments make a custom
plan's estimate look cheaper), so every call planned all twelve statements again:
about 1.3 ms of PostgreSQL CPU per call, two thirds of a one-message send. Measured
per call on PostgreSQL 15 with 360,000 messages (backend CPU from /proc):

    batch of     1      3     64    200 messages
    custom     1.96   2.22   5.95   14.9 ms
    generic    0.68   1.13   6.8    17.3 ms

Every table access in it is a lookup by a key with an index, but on small tables (a
team's few hundred conversations, with the dead rows that one update per message leaves
until autovacuum) the generic plans scanned whole tables: 3.1 ms of PostgreSQL CPU per
send with scans, 1.4-1.55 ms with `enable_seqscan = off` (a send through
`message_send_many`, 200 users, 6,000 messages). A table without a usable index is
still scanned.

A migration that replaces the function (CREATE OR REPLACE drops its settings) must set
these again.
"""

from django.db import migrations

SIGNATURE = "messaging_store_messages(bigint[], bigint[], text[], text[])"


def generic(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} SET enable_seqscan = off")


def default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} RESET plan_cache_mode")
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} RESET enable_seqscan")


class Migration(migrations.Migration):
    dependencies = [("messaging", "0004_store_messages_function")]

    operations = [migrations.RunPython(generic, default)]
