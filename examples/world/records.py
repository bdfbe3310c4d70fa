"""records: finance records whose every change can be undone.

    python examples/world/records.py --port 0 --db var/world/records.db

Every write (create, update, delete, restore) first takes a snapshot of the
record as it was and returns its `snapshot_id`; `POST /records/{id}/restore`
with that id puts the record back (a snapshot of "no record yet" restores
to no record). An update merges `fields` into the record; a null value
removes that field. Seeded with INV-1001 and INV-1002 (amounts in minor units).
A snapshot remembers the Idempotency-Key header of the write that took it:
`GET /records/{id}/snapshots?idempotency_key=K` lists the snapshots the writes
under K took (oldest first: the first is the state before them), so a
compensation can undo a write whose answer it never saw.
"""

from __future__ import annotations

import json
import re
import sys

import common as w

FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")

SCHEMA = [
    # fields is NULL once a record is deleted: the row keeps its version count
    """CREATE TABLE records (
        record_id TEXT PRIMARY KEY, fields TEXT, version INTEGER NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    # fields is NULL in a snapshot of "the record did not exist"
    """CREATE TABLE snapshots (
        snapshot_id TEXT PRIMARY KEY, record_id TEXT NOT NULL, version INTEGER NOT NULL,
        fields TEXT, taken_before TEXT NOT NULL, created_at TEXT NOT NULL)""",
    "CREATE INDEX snapshots_by_record ON snapshots (record_id, created_at)",
]

# Version 1 is SCHEMA; each migration takes the database one version up.
MIGRATIONS = [
    "ALTER TABLE snapshots ADD COLUMN idempotency_key TEXT",  # the Idempotency-Key of the write that took it
    "CREATE INDEX snapshots_by_idempotency_key ON snapshots (idempotency_key)",
]

SEED = {
    "INV-1001": {"vendor_id": "V-17", "amount": 125000, "currency": "EUR", "status": "open", "due": "2026-12-01"},
    "INV-1002": {"vendor_id": "V-17", "amount": 10000000, "currency": "EUR", "status": "open", "due": "2026-12-05"},
}


def seed(conn) -> None:
    at = w.now()
    for record_id, fields in SEED.items():
        conn.execute("INSERT INTO records VALUES (?, ?, 1, ?, ?)", (record_id, w.dumps(fields), at, at))


def want_fields(value, *, allow_null: bool) -> dict:
    fields = w.want_object(value, "fields", max_keys=100)
    for key, item in fields.items():
        if not FIELD_RE.fullmatch(key):
            raise w.HTTPError(400, f"field name {key[:70]!r} must be a letter or _ then up to 63 of A-Z a-z 0-9 _ . -")
        if item is None and not allow_null:
            raise w.HTTPError(400, f"field {key} is null; leave it out instead")
    return fields


def build(args) -> w.App:
    db = w.Database(args.db, SCHEMA, seed, MIGRATIONS)
    app = w.App("records", db)

    def current(conn, record_id: str):
        return conn.execute("SELECT * FROM records WHERE record_id = ?", (record_id,)).fetchone()

    def snapshot(conn, record_id: str, row, before: str, key: str | None) -> str:
        """Keep the record as it is now (a deleted or unknown one: no fields) and name the snapshot;
        key is the Idempotency-Key of the write about to happen."""
        snapshot_id = w.new_id("snap")
        conn.execute("INSERT INTO snapshots (snapshot_id, record_id, version, fields, taken_before, created_at,"
                     " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (snapshot_id, record_id, row["version"] if row else 0,
                      row["fields"] if row else None, before, w.now(), key))
        return snapshot_id

    def snapshot_view(snap) -> dict:
        return {"snapshot_id": snap["snapshot_id"], "record_id": snap["record_id"], "version": snap["version"],
                "fields": None if snap["fields"] is None else json.loads(snap["fields"]),
                "taken_before": snap["taken_before"], "created_at": snap["created_at"],
                "idempotency_key": snap["idempotency_key"]}

    def put(conn, record_id: str, row, fields: dict | None) -> int:
        """Write fields (None deletes); the new version number."""
        version, at = (row["version"] if row else 0) + 1, w.now()
        stored = None if fields is None else w.dumps(fields)
        if row is None:
            conn.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?)", (record_id, stored, version, at, at))
        else:
            conn.execute("UPDATE records SET fields = ?, version = ?, updated_at = ? WHERE record_id = ?",
                         (stored, version, at, record_id))
        return version

    def live(row):
        return row is not None and row["fields"] is not None

    @app.route("GET", "/health", public=True)
    def health(req):
        return {"ok": True}

    @app.route("GET", "/records")
    def list_records(req):
        with db.read() as conn:
            rows = conn.execute("SELECT record_id, version FROM records WHERE fields IS NOT NULL"
                                " ORDER BY record_id").fetchall()
        return {"records": [dict(r) for r in rows]}

    @app.route("POST", "/records", body="required")
    def create(req):
        key = w.header_idempotency_key(req)
        w.check_fields(req.body, required=("record_id", "fields"))
        record_id = w.want_id(req.body["record_id"], "record_id")
        fields = want_fields(req.body["fields"], allow_null=False)
        with db.write() as conn:
            row = current(conn, record_id)
            if live(row):
                raise w.HTTPError(409, f"record {record_id} already exists", code="exists")
            snapshot_id = snapshot(conn, record_id, row, "create", key)
            version = put(conn, record_id, row, fields)
        return w.Response(201, {"record_id": record_id, "fields": fields, "version": version,
                                "snapshot_id": snapshot_id})

    @app.route("GET", "/records/{record_id}")
    def get(req):
        record_id = w.want_id(req.params["record_id"], "record id")
        with db.read() as conn:
            row = current(conn, record_id)
        if not live(row):
            raise w.HTTPError(404, f"no record {record_id}")
        return {"record_id": record_id, "fields": json.loads(row["fields"]), "version": row["version"],
                "created_at": row["created_at"], "updated_at": row["updated_at"]}

    @app.route("PATCH", "/records/{record_id}", body="required")
    def update(req):
        key = w.header_idempotency_key(req)
        record_id = w.want_id(req.params["record_id"], "record id")
        w.check_fields(req.body, required=("fields",))
        changes = want_fields(req.body["fields"], allow_null=True)
        if not changes:
            raise w.HTTPError(400, "fields must name at least one field to change")
        with db.write() as conn:
            row = current(conn, record_id)
            if not live(row):
                raise w.HTTPError(404, f"no record {record_id}")
            fields = json.loads(row["fields"])
            for name, value in changes.items():
                if value is None:
                    fields.pop(name, None)
                else:
                    fields[name] = value
            if len(fields) > 100:
                raise w.HTTPError(400, "a record holds at most 100 fields")
            snapshot_id = snapshot(conn, record_id, row, "update", key)
            version = put(conn, record_id, row, fields)
        return {"record_id": record_id, "fields": fields, "version": version, "snapshot_id": snapshot_id}

    @app.route("DELETE", "/records/{record_id}")
    def delete(req):
        key = w.header_idempotency_key(req)
        record_id = w.want_id(req.params["record_id"], "record id")
        with db.write() as conn:
            row = current(conn, record_id)
            if not live(row):
                raise w.HTTPError(404, f"no record {record_id}", code="no_record")
            snapshot_id = snapshot(conn, record_id, row, "delete", key)
            version = put(conn, record_id, row, None)
        return {"record_id": record_id, "deleted": True, "version": version, "snapshot_id": snapshot_id}

    @app.route("POST", "/records/{record_id}/restore", body="required")
    def restore(req):
        key = w.header_idempotency_key(req)
        record_id = w.want_id(req.params["record_id"], "record id")
        w.check_fields(req.body, required=("snapshot_id",))
        wanted = w.want_id(req.body["snapshot_id"], "snapshot_id")
        with db.write() as conn:
            snap = conn.execute("SELECT * FROM snapshots WHERE snapshot_id = ? AND record_id = ?",
                                (wanted, record_id)).fetchone()
            if snap is None:
                raise w.HTTPError(404, f"record {record_id} has no snapshot {wanted}", code="no_snapshot")
            row = current(conn, record_id)
            snapshot_id = snapshot(conn, record_id, row, "restore", key)
            fields = None if snap["fields"] is None else json.loads(snap["fields"])
            version = put(conn, record_id, row, fields)
        return {"record_id": record_id, "fields": fields, "deleted": fields is None, "version": version,
                "restored_from": wanted, "snapshot_id": snapshot_id}

    @app.route("GET", "/snapshots/{snapshot_id}")
    def get_snapshot(req):
        snapshot_id = w.want_id(req.params["snapshot_id"], "snapshot id")
        with db.read() as conn:
            snap = conn.execute("SELECT * FROM snapshots WHERE snapshot_id = ?", (snapshot_id,)).fetchone()
        if snap is None:
            raise w.HTTPError(404, f"no snapshot {snapshot_id}")
        return snapshot_view(snap)

    @app.route("GET", "/records/{record_id}/snapshots")
    def list_snapshots(req):
        """The record's snapshots, oldest first; ?idempotency_key=K: only those the writes under K took."""
        record_id = w.want_id(req.params["record_id"], "record id")
        key = w.query_idempotency_key(req)
        rows = w.snapshots_taken(db, "record_id", record_id, key)
        return {"record_id": record_id, "idempotency_key": key, "snapshots": [snapshot_view(r) for r in rows]}

    return app


if __name__ == "__main__":
    sys.exit(w.run("records", build))
