"""Correctness under load: what the client recorded, held against what must have
happened, and against the rows in PostgreSQL.

- lost: an acknowledged message missing from a socket that should have received it
  (every socket of the recipient, every other socket of the sender), or missing from
  the database;
- duplicated: a message received more than once by one socket, or stored twice;
- out of order: on one socket, within one conversation, a message id lower than one
  received before it, or a sender's message arriving before one it sent earlier;
- also counted: sends never acknowledged, error frames, messages on sockets that had
  no business receiving them, and ids that differ between the ack, the frames and the
  database row.
"""

from __future__ import annotations

from collections import Counter

from bench.client import ChatClient


def check_delivery(client: ChatClient, stored: dict[str, list[int]] | None) -> dict:
    """`stored` maps client_id to the ids of its database rows (None: the system stores
    nothing, as the Channels relay)."""
    lost_sockets = duplicated_frames = misdelivered = id_mismatch = 0
    out_of_order = out_of_order_by_id = out_of_order_by_sender = 0
    reorder_examples: list[dict] = []
    unacked = errors = 0
    lost_db = duplicated_db = 0
    acked = 0

    per_socket: list[Counter] = [Counter(cid for cid, _ in sock.received) for sock in client.sockets]
    frame_ids: dict[str, set[int | None]] = {}
    for sock in client.sockets:
        for cid, mid in sock.received:
            frame_ids.setdefault(cid, set()).add(mid)

    for sent in client.sent.values():
        if sent.error is not None:
            errors += 1
            continue
        if sent.acked_at is None:
            unacked += 1
            continue
        acked += 1
        expected = [s for s in sent.recipient.sockets + sent.sender.sockets if s is not sent.socket]
        for sock in expected:
            count = per_socket[sock.index][sent.client_id]
            if count == 0:
                lost_sockets += 1
            duplicated_frames += max(0, count - 1)
        if frame_ids.get(sent.client_id, {sent.message_id}) != {sent.message_id}:
            id_mismatch += 1
        if stored is not None:
            rows = stored.get(sent.client_id, [])
            if not rows:
                lost_db += 1
            duplicated_db += max(0, len(rows) - 1)
            if rows and sent.message_id not in rows:
                id_mismatch += 1

    for sock in client.sockets:
        last_id: dict[frozenset, int] = {}
        last_seq: dict[int, int] = {}
        for cid, mid in sock.received:
            sent = client.sent[cid]
            # The sending socket gets the ack, never a `message` of its own send.
            if sock is sent.socket or (sock.user is not sent.sender and sock.user is not sent.recipient):
                misdelivered += 1
            conversation = frozenset((sent.sender.index, sent.recipient.index))
            by_id = mid is not None and mid < last_id.get(conversation, -1)
            by_sender = sent.seq < last_seq.get(sent.socket.index, -1)
            if by_id or by_sender:
                out_of_order += 1
                out_of_order_by_id += by_id
                out_of_order_by_sender += by_sender
                if len(reorder_examples) < 5:
                    reorder_examples.append(
                        {
                            "socket_of": sent.recipient.username
                            if sock.user is sent.recipient
                            else sent.sender.username,
                            "message_id": mid,
                            "after_id": last_id.get(conversation),
                            "client_id": cid,
                            "phase": sent.phase.name,
                        }
                    )
            if mid is not None:
                last_id[conversation] = max(mid, last_id.get(conversation, -1))
            last_seq[sent.socket.index] = max(sent.seq, last_seq.get(sent.socket.index, -1))

    stored_unacked = 0
    if stored is not None:
        stored_unacked = sum(1 for cid in stored if cid in client.sent and client.sent[cid].acked_at is None)

    return {
        "sent": len(client.sent),
        "acked": acked,
        "lost": lost_sockets + lost_db,
        "duplicated": duplicated_frames + duplicated_db,
        "out_of_order": out_of_order,
        "detail": {
            "lost_socket_deliveries": lost_sockets,
            "lost_in_database": lost_db,
            "duplicated_frames": duplicated_frames,
            "duplicated_rows": duplicated_db,
            "unacked": unacked,
            "error_replies": errors,
            "error_codes": dict(client.error_frames),
            "misdelivered": misdelivered,
            "id_mismatch": id_mismatch,
            "stored_but_unacked": stored_unacked,
            "out_of_order_by_id": out_of_order_by_id,
            "out_of_order_by_sender": out_of_order_by_sender,
            "reorder_examples": reorder_examples,
            "sockets_closed_by_server": Counter(
                sock.closed_by_server for sock in client.sockets if sock.closed_by_server is not None
            ),
            "foreign_frames": client.foreign_frames,
            "database_checked": stored is not None,
        },
    }
