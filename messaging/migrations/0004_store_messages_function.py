"""`messaging_store_messages()`: the write of a batch of sends, in PostgreSQL, in one
round trip (see `messaging.services._store_postgresql`). SQLite keeps the ORM path.

A change to the tables it writes needs a new migration that replaces the function, and
sets its `plan_cache_mode` again (0005).
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION messaging_store_messages(
    p_senders bigint[], p_recipients bigint[], p_bodies text[], p_client_ids text[]
) RETURNS TABLE (
    ord integer, message_id bigint, conversation_id bigint, recipient_id bigint, body text,
    created_at timestamptz, created boolean, prev_sender bigint, prev_recipient bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_user bigint;
    v_ord integer[];
    v_ids bigint[];
BEGIN
    -- 1. Every pair has its conversation and both memberships (created before the
    --    locks, as a concurrent creator of the same pair may hold them).
    INSERT INTO messaging_conversation (user_low_id, user_high_id, created_at)
    SELECT p.low, p.high, clock_timestamp()
    FROM (SELECT DISTINCT LEAST(t.s, t.r) AS low, GREATEST(t.s, t.r) AS high
          FROM unnest(p_senders, p_recipients) AS t(s, r)) AS p
    WHERE NOT EXISTS (SELECT 1 FROM messaging_conversation e
                      WHERE e.user_low_id = p.low AND e.user_high_id = p.high)
    ON CONFLICT (user_low_id, user_high_id) DO NOTHING;

    INSERT INTO messaging_membership (conversation_id, user_id, peer_id, last_read_id)
    SELECT c.id, u.me, u.peer, 0
    FROM (SELECT t.s AS me, t.r AS peer FROM unnest(p_senders, p_recipients) AS t(s, r)
          UNION SELECT t.r, t.s FROM unnest(p_senders, p_recipients) AS t(s, r)) AS u
    JOIN messaging_conversation c
      ON c.user_low_id = LEAST(u.me, u.peer) AND c.user_high_id = GREATEST(u.me, u.peer)
    WHERE NOT EXISTS (SELECT 1 FROM messaging_membership m WHERE m.user_id = u.me AND m.peer_id = u.peer)
    ON CONFLICT DO NOTHING;

    -- 2. The user locks, in id order (no deadlock), before any message id is drawn:
    --    the messages of one user commit in id order, on any number of processes.
    FOR v_user IN SELECT DISTINCT x FROM unnest(p_senders || p_recipients) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(v_user);
    END LOOP;

    -- 3. Retries: a (sender, client_id) already stored answers with that message.
    RETURN QUERY
    SELECT i.ord::integer, m.id, m.conversation_id, m.recipient_id, m.body, m.created_at,
           false, NULL::bigint, NULL::bigint
    FROM unnest(p_senders, p_client_ids) WITH ORDINALITY AS i(s, c, ord)
    JOIN messaging_message m ON m.sender_id = i.s AND m.client_id = i.c;

    -- 4. The new messages, their ids drawn in the order of the input.
    SELECT array_agg(i.ord::integer ORDER BY i.ord) INTO v_ord
    FROM unnest(p_senders, p_client_ids) WITH ORDINALITY AS i(s, c, ord)
    WHERE i.c IS NULL
       OR NOT EXISTS (SELECT 1 FROM messaging_message m WHERE m.sender_id = i.s AND m.client_id = i.c);
    IF v_ord IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(q.id ORDER BY q.id) INTO v_ids
    FROM (SELECT nextval(pg_get_serial_sequence('messaging_message', 'id')) AS id
          FROM generate_series(1, array_length(v_ord, 1))) AS q;

    INSERT INTO messaging_message (id, conversation_id, sender_id, recipient_id, body, created_at, client_id)
    SELECT n.id, c.id, p_senders[n.ord], p_recipients[n.ord], p_bodies[n.ord], clock_timestamp(),
           p_client_ids[n.ord]
    FROM unnest(v_ord, v_ids) AS n(ord, id)
    JOIN messaging_conversation c
      ON c.user_low_id = LEAST(p_senders[n.ord], p_recipients[n.ord])
     AND c.user_high_id = GREATEST(p_senders[n.ord], p_recipients[n.ord])
    ORDER BY n.id;

    -- 5. Each new message with each person's previous message id: the one before it
    --    in this batch, or their delivery cursor.
    RETURN QUERY
    WITH touches AS (
        SELECT m.id, m.sender_id AS person FROM messaging_message m WHERE m.id = ANY (v_ids)
        UNION ALL
        SELECT m.id, m.recipient_id FROM messaging_message m WHERE m.id = ANY (v_ids)
    ), prevs AS (
        SELECT t.id, t.person,
               COALESCE(lag(t.id) OVER (PARTITION BY t.person ORDER BY t.id),
                        (SELECT d.last_message_id FROM messaging_deliverycursor d WHERE d.user_id = t.person),
                        0) AS prev
        FROM touches t
    )
    SELECT n.ord, m.id, m.conversation_id, m.recipient_id, m.body, m.created_at, true, ps.prev, pr.prev
    FROM unnest(v_ord, v_ids) AS n(ord, id)
    JOIN messaging_message m ON m.id = n.id
    JOIN prevs ps ON ps.id = m.id AND ps.person = m.sender_id
    JOIN prevs pr ON pr.id = m.id AND pr.person = m.recipient_id;

    -- 6. Markers: each conversation's last message, each sender's read marker (writing
    --    means having read up to there), each person's delivery cursor.
    UPDATE messaging_conversation c
    SET last_message_id = GREATEST(COALESCE(c.last_message_id, 0), v.newest)
    FROM (SELECT m.conversation_id, max(m.id) AS newest FROM messaging_message m
          WHERE m.id = ANY (v_ids) GROUP BY m.conversation_id) AS v
    WHERE c.id = v.conversation_id;

    UPDATE messaging_membership mm
    SET last_read_id = GREATEST(mm.last_read_id, v.up_to)
    FROM (SELECT m.conversation_id, m.sender_id, max(m.id) AS up_to FROM messaging_message m
          WHERE m.id = ANY (v_ids) GROUP BY m.conversation_id, m.sender_id) AS v
    WHERE mm.conversation_id = v.conversation_id AND mm.user_id = v.sender_id;

    INSERT INTO messaging_deliverycursor AS d (user_id, last_message_id)
    SELECT t.person, max(t.id)
    FROM (SELECT m.id, m.sender_id AS person FROM messaging_message m WHERE m.id = ANY (v_ids)
          UNION ALL
          SELECT m.id, m.recipient_id FROM messaging_message m WHERE m.id = ANY (v_ids)) AS t
    GROUP BY t.person
    ON CONFLICT (user_id) DO UPDATE SET last_message_id = GREATEST(d.last_message_id, EXCLUDED.last_message_id);
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS messaging_store_messages(bigint[], bigint[], text[], text[]);"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("messaging", "0003_backfill_delivery_cursors")]

    operations = [migrations.RunPython(create, drop)]
