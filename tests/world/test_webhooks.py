"""webhooks: deliveries counted per event id."""

from __future__ import annotations

import pytest

from tests.world.conftest import call


@pytest.fixture
def webhooks(spawn):
    return spawn("webhooks")


def test_three_deliveries_of_one_event_are_counted(webhooks):
    counts = [call("POST", webhooks.url + "/events/evt-42", {"payload": {"attempt": n}}).body["deliveries"]
              for n in (1, 2, 3)]
    assert counts == [1, 2, 3]
    got = call("GET", webhooks.url + "/events/evt-42")
    assert got.status == 200
    assert got.body["event_id"] == "evt-42"
    assert got.body["deliveries"] == 3
    assert got.body["last_payload"] == {"attempt": 3}


def test_events_are_counted_apart(webhooks):
    call("POST", webhooks.url + "/events/evt-a", {"payload": "x"})
    call("POST", webhooks.url + "/events/evt-b", {"payload": [1, 2]})
    call("POST", webhooks.url + "/events/evt-b", {"payload": None})
    assert call("GET", webhooks.url + "/events/evt-a").body["deliveries"] == 1
    b = call("GET", webhooks.url + "/events/evt-b").body
    assert (b["deliveries"], b["last_payload"]) == (2, None)
    never = call("GET", webhooks.url + "/events/evt-never").body
    assert (never["deliveries"], never["last_payload"]) == (0, None)
    listed = call("GET", webhooks.url + "/events").body["events"]
    assert listed == [{"event_id": "evt-a", "deliveries": 1}, {"event_id": "evt-b", "deliveries": 2}]


@pytest.mark.parametrize("path, body, message", [
    ("/events/evt-1", {}, "missing field(s): payload"),
    ("/events/evt-1", {"payload": 1, "extra": 2}, "unknown field(s): extra"),
    ("/events/evt%201", {"payload": 1}, "event id must be"),
])
def test_invalid_deliveries_are_400_and_not_counted(webhooks, path, body, message):
    reply = call("POST", webhooks.url + path, body)
    assert reply.status == 400
    assert message in reply.body["error"]
    assert call("GET", webhooks.url + "/events").body["events"] == []
