"""config: the deployed configuration of each service, with snapshots to roll back.

    python examples/world/config_service.py --port 0 --db var/world/config.db

`POST /deploy {service, config}` replaces a service's config and returns the
`snapshot_id` of the config it replaced (a snapshot of "none yet" for a new
service); `POST /restore {snapshot_id}` puts that config back and returns a
snapshot of what it replaced, so a restore can be undone too. Seeded with
configs for billing-api and webhook-dispatcher.
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

SEED = {
    "billing-api": {"max_transfer_minor": 500000, "currency": "EUR", "maintenance": False},
    "webhook-dispatcher": {"retries": 3, "timeout_seconds": 5},
}


def seed(conn) -> None:
    for service, config in SEED.items():
        conn.execute("INSERT INTO configs VALUES (?, ?, 1, ?)", (service, w.dumps(config), w.now()))


def build(args) -> w.App:
    db = w.Database(args.db, SCHEMA, seed)
    app = w.App("config", db)

    def current(conn, service: str):
        return conn.execute("SELECT * FROM configs WHERE service = ?", (service,)).fetchone()

    def snapshot(conn, service: str, row, before: str) -> str:
        snapshot_id = w.new_id("snap")
        conn.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
                     (snapshot_id, service, row["version"] if row else 0, row["config"] if row else None,
                      before, w.now()))
        return snapshot_id

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
        w.check_fields(req.body, required=("service", "config"))
        service = w.want_id(req.body["service"], "service")
        config = w.want_object(req.body["config"], "config", max_keys=200)
        with db.write() as conn:
            row = current(conn, service)
            snapshot_id = snapshot(conn, service, row, "deploy")
            version = put(conn, service, row, config)
        return {"service": service, "version": version, "snapshot_id": snapshot_id}

    @app.route("POST", "/restore", body="required")
    def restore(req):
        w.check_fields(req.body, required=("snapshot_id",))
        wanted = w.want_id(req.body["snapshot_id"], "snapshot_id")
        with db.write() as conn:
            snap = conn.execute("SELECT * FROM snapshots WHERE snapshot_id = ?", (wanted,)).fetchone()
            if snap is None:
                raise w.HTTPError(404, f"no snapshot {wanted}")
            service = snap["service"]
            row = current(conn, service)
            snapshot_id = snapshot(conn, service, row, "restore")
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
        return {"snapshot_id": snapshot_id, "service": snap["service"], "version": snap["version"],
                "config": None if snap["config"] is None else json.loads(snap["config"]),
                "taken_before": snap["taken_before"], "created_at": snap["created_at"]}

    return app


if __name__ == "__main__":
    sys.exit(w.run("config", build))
