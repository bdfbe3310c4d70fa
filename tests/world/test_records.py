"""records: create, get, update (snapshot of the previous version), delete,
restore by snapshot, validation, persistence."""

from __future__ import annotations

import pytest

from tests.world.conftest import call, stop


@pytest.fixture
def records(spawn):
    return spawn("records")


def get(svc, record_id):
    return call("GET", f"{svc.url}/records/{record_id}")


def test_seeded_invoices(records):
    one = get(records, "INV-1001")
    assert one.status == 200
    assert one.body["fields"]["vendor_id"] == "V-17"
    assert one.body["fields"]["amount"] == 125000
    assert one.body["version"] == 1
    assert get(records, "INV-1002").body["fields"]["amount"] == 10000000
    listed = call("GET", records.url + "/records").body["records"]
    assert [r["record_id"] for r in listed] == ["INV-1001", "INV-1002"]
    assert get(records, "INV-9999").status == 404


def test_create_then_get_and_create_again_is_409(records):
    created = call("POST", records.url + "/records", {"record_id": "VND-17", "fields": {"name": "Northwind"}})
    assert created.status == 201
    assert created.body["fields"] == {"name": "Northwind"}
    assert created.body["version"] == 1
    assert get(records, "VND-17").body["fields"] == {"name": "Northwind"}
    again = call("POST", records.url + "/records", {"record_id": "VND-17", "fields": {"name": "Other"}})
    assert again.status == 409
    assert "already exists" in again.body["error"]
    assert get(records, "VND-17").body["fields"] == {"name": "Northwind"}


def test_undoing_a_create_removes_the_record(records):
    created = call("POST", records.url + "/records", {"record_id": "TMP-1", "fields": {"a": 1}}).body
    undone = call("POST", records.url + "/records/TMP-1/restore", {"snapshot_id": created["snapshot_id"]})
    assert undone.status == 200
    assert undone.body["deleted"] is True
    assert get(records, "TMP-1").status == 404


@pytest.mark.parametrize("body, message", [
    ({"record_id": "INV-1", "fields": []}, "fields must be a JSON object"),
    ({"record_id": "bad id", "fields": {}}, "record_id must be"),
    ({"record_id": "INV-1", "fields": {"a b": 1}}, "field name"),
    ({"record_id": "INV-1", "fields": {"a": None}}, "is null"),
    ({"record_id": "INV-1"}, "missing field(s): fields"),
    ({"record_id": "INV-1", "fields": {}, "owner": "x"}, "unknown field(s): owner"),
])
def test_invalid_creates_are_400(records, body, message):
    reply = call("POST", records.url + "/records", body)
    assert reply.status == 400
    assert message in reply.body["error"]
    assert get(records, "INV-1").status == 404


def test_update_returns_the_previous_version_and_restore_brings_it_back(records):
    old = get(records, "INV-1001").body["fields"]
    updated = call("PATCH", records.url + "/records/INV-1001", {"fields": {"status": "paid", "amount": 1}})
    assert updated.status == 200
    assert updated.body["fields"] == old | {"status": "paid", "amount": 1}
    assert updated.body["version"] == 2
    snap = updated.body["snapshot_id"]
    assert get(records, "INV-1001").body["fields"]["status"] == "paid"
    shown = call("GET", f"{records.url}/snapshots/{snap}").body
    assert (shown["record_id"], shown["version"], shown["fields"]) == ("INV-1001", 1, old)
    restored = call("POST", records.url + "/records/INV-1001/restore", {"snapshot_id": snap})
    assert restored.status == 200
    assert restored.body["fields"] == old
    assert restored.body["restored_from"] == snap
    after = get(records, "INV-1001").body
    assert after["fields"] == old
    assert after["version"] == 3
    # the restore can itself be undone
    redo = call("POST", records.url + "/records/INV-1001/restore", {"snapshot_id": restored.body["snapshot_id"]})
    assert redo.body["fields"]["status"] == "paid"


def test_update_merges_and_null_removes_a_field(records):
    reply = call("PATCH", records.url + "/records/INV-1002", {"fields": {"due": None, "note": "disputed"}})
    assert reply.status == 200
    fields = get(records, "INV-1002").body["fields"]
    assert "due" not in fields
    assert fields["note"] == "disputed"
    assert fields["vendor_id"] == "V-17"


def test_update_of_a_missing_record_is_404_and_empty_update_400(records):
    assert call("PATCH", records.url + "/records/INV-4040", {"fields": {"a": 1}}).status == 404
    empty = call("PATCH", records.url + "/records/INV-1001", {"fields": {}})
    assert empty.status == 400
    assert "at least one field" in empty.body["error"]
    assert call("PATCH", records.url + "/records/INV-1001", {"record_id": "INV-1001"}).status == 400
    assert get(records, "INV-1001").body["version"] == 1


def test_delete_then_restore(records):
    old = get(records, "INV-1002").body["fields"]
    deleted = call("DELETE", records.url + "/records/INV-1002")
    assert deleted.status == 200
    assert deleted.body["deleted"] is True
    assert get(records, "INV-1002").status == 404
    assert [r["record_id"] for r in call("GET", records.url + "/records").body["records"]] == ["INV-1001"]
    assert call("DELETE", records.url + "/records/INV-1002").status == 404
    assert call("PATCH", records.url + "/records/INV-1002", {"fields": {"a": 1}}).status == 404
    restored = call("POST", records.url + "/records/INV-1002/restore", {"snapshot_id": deleted.body["snapshot_id"]})
    assert restored.status == 200
    assert restored.body["deleted"] is False
    assert get(records, "INV-1002").body["fields"] == old


def test_a_deleted_record_can_be_created_anew(records):
    call("DELETE", records.url + "/records/INV-1001")
    again = call("POST", records.url + "/records", {"record_id": "INV-1001", "fields": {"amount": 5}})
    assert again.status == 201
    assert again.body["version"] == 3  # versions keep counting across the delete
    assert get(records, "INV-1001").body["fields"] == {"amount": 5}


def test_restore_needs_a_snapshot_of_that_record(records):
    snap = call("PATCH", records.url + "/records/INV-1001", {"fields": {"status": "paid"}}).body["snapshot_id"]
    other = call("POST", records.url + "/records/INV-1002/restore", {"snapshot_id": snap})
    assert other.status == 404
    assert "has no snapshot" in other.body["error"]
    assert call("POST", records.url + "/records/INV-1001/restore", {"snapshot_id": "snap_nope"}).status == 404
    assert call("POST", records.url + "/records/INV-1001/restore", {}).status == 400
    assert call("GET", records.url + "/snapshots/snap_nope").status == 404
    assert get(records, "INV-1002").body["version"] == 1


def test_records_survive_a_restart(spawn):
    first = spawn("records")
    call("PATCH", first.url + "/records/INV-1001", {"fields": {"status": "paid"}})
    call("DELETE", first.url + "/records/INV-1002")
    assert stop(first.proc) == 0
    second = spawn("records", db=first.db)
    assert get(second, "INV-1001").body["fields"]["status"] == "paid"
    assert get(second, "INV-1002").status == 404  # not seeded again
