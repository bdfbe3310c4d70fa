"""config: the deployed configuration of each service, with snapshots to roll back.

    python examples/world/config_service.py --port 0 --db var/world/config.db

`POST /deploy {service, config}` replaces a service's config and returns the
`snapshot_id` of the config it replaced (a snapshot of "none yet" for a new
service); `POST /restore {snapshot_id}` puts that config back and returns a
snapshot of what it replaced, so a restore can be undone too (with `service`
too, it is refused unless the snapshot is that service's). Seeded with
configs for billing-api and webhook-dispatcher. A snapshot remembers the
Idempotency-Key header of the write that took it:
`GET /config/{service}/snapshots?idempotency_key=K` lists the snapshots the
writes under K took, oldest first.
"""

from __future__ import annotations

import json
import sys

import common as w

SCHEMA = [
    # config is NULL for a service whose config was restored to "none"
    """CREATE TABLE configs (
        service TEXT PRIMARY KEY, config TEXT, version INTEGER NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE snapshots (
        snapshot_id TEXT PRIMARY KEY, service TEXT NOT NULL, version INTEGER NOT NULL,
        config TEXT, taken_before TEXT NOT NULL, created_at TEXT NOT NULL)""",
]

# Version 1 is SCHEMA; each migration takes the database one version up.
MIGRATIONS = [
    "ALTER TABLE snapshots ADD COLUMN idempotency_key TEXT",  # the Idempotency-Key of the write that took it
    "CREATE INDEX snapshots_by_idempotency_key ON snapshots (idempotency_key)",
]

SEED = {
    "billing-api": {"max_transfer_minor": 500000, "currency": "EUR", "maintenance": False},
    "webhook-dispatcher": {"retries": 3, "timeout_seconds": 5},
}


def seed(conn) -> None:
    for service, config in SEED.items():
        conn.execute("INSERT INTO configs VALUES (?, ?, 1, ?)", (service, w.dumps(config), w.now()))


def build(args) -> w.App:
    db = w.Database(args.db, SCHEMA, seed, MIGRATIONS)
    app = w.App("config", db)

    def current(conn, service: str):
        return conn.execute("SELECT * FROM configs WHERE service = ?", (service,)).fetchone()

    def snapshot(conn, service: str, row, before: str, key: str | None) -> str:
        snapshot_id = w.new_id("snap")
        conn.execute("INSERT INTO snapshots (snapshot_id, service, version, config, taken_before, created_at,"
                     " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (snapshot_id, service, row["version"] if row else 0, row["config"] if row else None,
                      before, w.now(), key))
        return snapshot_id

    def snapshot_view(snap) -> dict:
        return {"snapshot_id": snap["snapshot_id"], "service": snap["service"], "version": snap["version"],
                "config": None if snap["config"] is None else json.loads(snap["config"]),
                "taken_before": snap["taken_before"], "created_at": snap["created_at"],
                "idempotency_key": snap["idempotency_key"]}

    def put(conn, service: str, row, config: dict | None) -> int:
        version = (row["version"] if row else 0) + 1
        conn.execute("INSERT INTO configs VALUES (?, ?, ?, ?) ON CONFLICT (service) DO UPDATE"
                     " SET config = excluded.config, version = excluded.version, updated_at = excluded.updated_at",
                     (service, None if config is None else w.dumps(config), version, w.now()))
        return version

    @app.route("GET", "/health", public=True)
    def health(req):
        return {"ok": True}

    @app.route("GET", "/config")
    def list_services(req):
        with db.read() as conn:
            rows = conn.execute("SELECT service, version FROM configs WHERE config IS NOT NULL"
                                " ORDER BY service").fetchall()
        return {"services": [dict(r) for r in rows]}

    @app.route("GET", "/config/{service}")
    def get_config(req):
        service = w.want_id(req.params["service"], "service")
        with db.read() as conn:
            row = current(conn, service)
        if row is None or row["config"] is None:
            raise w.HTTPError(404, f"no config deployed for {service}")
        return {"service": service, "config": json.loads(row["config"]), "version": row["version"],
                "updated_at": row["updated_at"]}

    @app.route("POST", "/deploy", body="required")
    def deploy(req):
        key = w.header_idempotency_key(req)
        w.check_fields(req.body, required=("service", "config"))
        service = w.want_id(req.body["service"], "service")
        config = w.want_object(req.body["config"], "config", max_keys=200)
        with db.write() as conn:
            row = current(conn, service)
            snapshot_id = snapshot(conn, service, row, "deploy", key)
            version = put(conn, service, row, config)
        return {"service": service, "version": version, "snapshot_id": snapshot_id}

    @app.route("POST", "/restore", body="required")
    def restore(req):
        key = w.header_idempotency_key(req)
        w.check_fields(req.body, required=("snapshot_id",), optional=("service",))
        wanted = w.want_id(req.body["snapshot_id"], "snapshot_id")
        expected = w.want_id(req.body["service"], "service") if "service" in req.body else None
        with db.write() as conn:
            snap = conn.execute("SELECT * FROM snapshots WHERE snapshot_id = ?", (wanted,)).fetchone()
            if snap is None:
                raise w.HTTPError(404, f"no snapshot {wanted}", code="no_snapshot")
            service = snap["service"]
            if expected is not None and expected != service:
                raise w.HTTPError(409, f"snapshot {wanted} is of {service}, not {expected}", code="wrong_service")
            row = current(conn, service)
            snapshot_id = snapshot(conn, service, row, "restore", key)
            config = None if snap["config"] is None else json.loads(snap["config"])
            version = put(conn, service, row, config)
        return {"service": service, "config": config, "version": version, "restored_from": wanted,
                "snapshot_id": snapshot_id}

    @app.route("GET", "/snapshots/{snapshot_id}")
    def get_snapshot(req):
        snapshot_id = w.want_id(req.params["snapshot_id"], "snapshot id")
        with db.read() as conn:
            snap = conn.execute("SELECT * FROM snapshots WHERE snapshot_id = ?", (snapshot_id,)).fetchone()
        if snap is None:
            raise w.HTTPError(404, f"no snapshot {snapshot_id}")
        return snapshot_view(snap)

    @app.route("GET", "/config/{service}/snapshots")
    def list_snapshots(req):
        """The service's snapshots, oldest first; ?idempotency_key=K: only those the writes under K took."""
        service = w.want_id(req.params["service"], "service")
        key = w.query_idempotency_key(req)
        rows = w.snapshots_taken(db, "service", service, key)
        return {"service": service, "idempotency_key": key, "snapshots": [snapshot_view(r) for r in rows]}

    return app


if __name__ == "__main__":
    sys.exit(w.run("config", build))
