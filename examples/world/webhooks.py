"""webhooks: a receiver that counts deliveries per event id.

    python examples/world/webhooks.py --port 0 --db var/world/webhooks.db

`POST /events/{event_id} {payload}` records one delivery (any JSON payload);
`GET /events/{event_id}` answers {event_id, deliveries, last_payload}, with
0 deliveries and a null payload for an event never delivered.
"""

from __future__ import annotations

import json
import sys

import common as w

SCHEMA = [
    """CREATE TABLE deliveries (
        delivery_id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
        payload TEXT NOT NULL, received_at TEXT NOT NULL)""",
    "CREATE INDEX deliveries_by_event ON deliveries (event_id, delivery_id)",
]


def build(args) -> w.App:
    db = w.Database(args.db, SCHEMA)
    app = w.App("webhooks", db)

    def summary(conn, event_id: str) -> dict:
        count, first, last = conn.execute("SELECT count(*), min(received_at), max(received_at) FROM deliveries"
                                          " WHERE event_id = ?", (event_id,)).fetchone()
        latest = conn.execute("SELECT payload FROM deliveries WHERE event_id = ? ORDER BY delivery_id DESC LIMIT 1",
                              (event_id,)).fetchone()
        return {"event_id": event_id, "deliveries": count,
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
        with db.write() as conn:
            conn.execute("INSERT INTO deliveries (event_id, payload, received_at) VALUES (?, ?, ?)",
                         (event_id, w.dumps(req.body["payload"]), w.now()))
            count = conn.execute("SELECT count(*) FROM deliveries WHERE event_id = ?", (event_id,)).fetchone()[0]
        return {"event_id": event_id, "deliveries": count}

    @app.route("GET", "/events/{event_id}")
    def get_event(req):
        event_id = w.want_id(req.params["event_id"], "event id")
        with db.read() as conn:
            return summary(conn, event_id)

    return app


if __name__ == "__main__":
    sys.exit(w.run("webhooks", build))
