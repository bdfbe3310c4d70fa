"""webhooks: a receiver that counts deliveries per event id.

    python examples/world/webhooks.py --port 0 --db var/world/webhooks.db

`POST /events/{event_id} {payload}` records one delivery (any JSON payload);
`GET /events/{event_id}` answers {event_id, deliveries, last_payload}, with
0 deliveries and a null payload for an event never delivered.

A POST with an `Idempotency-Key` header is delivered once per key: a repeat
with the same key, event and payload is not counted again and gets the first
answer (header Idempotent-Replayed: true); the same key with another event or
payload is 422 `idempotency_key_reused`. `deliveries` counts what the
receiver really took in; `duplicates` counts the repeats it turned away.

`POST /events/{event_id}/retractions {reason}` is the compensating event:
it tells the partner to disregard what was delivered for that event (a
delivered webhook cannot be unsent; it can be called back). It is counted
in `retractions` and honours `Idempotency-Key` like a delivery. Retracting
an event never delivered answers `{"status": "never_happened"}` and counts
nothing.
"""

from __future__ import annotations

import hashlib
import json
import sys

import common as w

SCHEMA = [
    """CREATE TABLE deliveries (
        delivery_id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
        payload TEXT NOT NULL, received_at TEXT NOT NULL)""",
    "CREATE INDEX deliveries_by_event ON deliveries (event_id, delivery_id)",
]

# Version 1 is SCHEMA; each migration takes the database one version up.
MIGRATIONS = [
    # one row per Idempotency-Key: what it delivered and the answer it got
    """CREATE TABLE idempotency (
        key TEXT PRIMARY KEY, event_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL, response TEXT NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL)""",
    "CREATE INDEX idempotency_by_event ON idempotency (event_id)",
    """CREATE TABLE retractions (
        retraction_id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
        reason TEXT NOT NULL, received_at TEXT NOT NULL)""",
]


def replayed(conn, key: str | None, fingerprint: str) -> w.Response | None:
    """The first answer to this Idempotency-Key, if it was used before (422
    when it was used for another request); None: a first request."""
    if key is None:
        return None
    seen = conn.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
    if seen is None:
        return None
    if seen["fingerprint"] != fingerprint:
        raise w.HTTPError(422, "this Idempotency-Key was used with a different request", code="idempotency_key_reused")
    conn.execute("UPDATE idempotency SET duplicates = duplicates + 1 WHERE key = ?", (key,))
    return w.Response(seen["status"], json.loads(seen["response"]), {"Idempotent-Replayed": "true"})


def remember(conn, key: str | None, event_id: str, fingerprint: str, answer: dict) -> None:
    if key is not None:
        conn.execute("INSERT INTO idempotency (key, event_id, fingerprint, status, response, created_at)"
                     " VALUES (?, ?, ?, 200, ?, ?)", (key, event_id, fingerprint, w.dumps(answer), w.now()))


def build(args) -> w.App:
    db = w.Database(args.db, SCHEMA, migrations=MIGRATIONS)
    app = w.App("webhooks", db)

    def summary(conn, event_id: str) -> dict:
        count, first, last = conn.execute("SELECT count(*), min(received_at), max(received_at) FROM deliveries"
                                          " WHERE event_id = ?", (event_id,)).fetchone()
        latest = conn.execute("SELECT payload FROM deliveries WHERE event_id = ? ORDER BY delivery_id DESC LIMIT 1",
                              (event_id,)).fetchone()
        duplicates = conn.execute("SELECT coalesce(sum(duplicates), 0) FROM idempotency WHERE event_id = ?",
                                  (event_id,)).fetchone()[0]
        retractions = conn.execute("SELECT count(*) FROM retractions WHERE event_id = ?", (event_id,)).fetchone()[0]
        return {"event_id": event_id, "deliveries": count, "duplicates": duplicates, "retractions": retractions,
                "last_payload": None if latest is None else json.loads(latest["payload"]),
                "first_delivered_at": first, "last_delivered_at": last}

    @app.route("GET", "/health", public=True)
    def health(req):
        return {"ok": True}

    @app.route("GET", "/events")
    def list_events(req):
        with db.read() as conn:
            rows = conn.execute("SELECT event_id, count(*) AS deliveries FROM deliveries"
                                " GROUP BY event_id ORDER BY event_id").fetchall()
        return {"events": [dict(r) for r in rows]}

    @app.route("POST", "/events/{event_id}", body="required")
    def deliver(req):
        event_id = w.want_id(req.params["event_id"], "event id")
        w.check_fields(req.body, required=("payload",))
        key = w.header_idempotency_key(req)
        fingerprint = hashlib.sha256(f"{req.method} {req.path}\n{w.dumps(req.body)}".encode()).hexdigest()
        with db.write() as conn:  # one writer at a time: concurrent repeats of a key deliver once
            replay = replayed(conn, key, fingerprint)
            if replay is not None:
                return replay
            conn.execute("INSERT INTO deliveries (event_id, payload, received_at) VALUES (?, ?, ?)",
                         (event_id, w.dumps(req.body["payload"]), w.now()))
            count = conn.execute("SELECT count(*) FROM deliveries WHERE event_id = ?", (event_id,)).fetchone()[0]
            answer = {"event_id": event_id, "deliveries": count}
            remember(conn, key, event_id, fingerprint, answer)
        return answer

    @app.route("POST", "/events/{event_id}/retractions", body="optional")
    def retract(req):
        event_id = w.want_id(req.params["event_id"], "event id")
        body = req.body or {}
        w.check_fields(body, optional=("reason",))
        key = w.header_idempotency_key(req)
        fingerprint = hashlib.sha256(f"{req.method} {req.path}\n{w.dumps(body)}".encode()).hexdigest()
        with db.write() as conn:
            replay = replayed(conn, key, fingerprint)
            if replay is not None:
                return replay
            delivered = conn.execute("SELECT count(*) FROM deliveries WHERE event_id = ?", (event_id,)).fetchone()[0]
            if not delivered:
                answer = {"event_id": event_id, "status": "never_happened", "retractions": 0}
            else:
                conn.execute("INSERT INTO retractions (event_id, reason, received_at) VALUES (?, ?, ?)",
                             (event_id, str(body.get("reason", ""))[:500], w.now()))
                n = conn.execute("SELECT count(*) FROM retractions WHERE event_id = ?", (event_id,)).fetchone()[0]
                answer = {"event_id": event_id, "status": "retracted", "retractions": n}
            remember(conn, key, event_id, fingerprint, answer)
        return answer

    @app.route("GET", "/events/{event_id}")
    def get_event(req):
        event_id = w.want_id(req.params["event_id"], "event id")
        with db.read() as conn:
            return summary(conn, event_id)

    return app


if __name__ == "__main__":
    sys.exit(w.run("webhooks", build))
