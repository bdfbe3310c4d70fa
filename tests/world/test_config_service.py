"""config: deploy (snapshot of the previous config), restore, get."""

from __future__ import annotations

import pytest

from tests.world.conftest import call


@pytest.fixture
def config(spawn):
    return spawn("config")


def test_seeded_configs(config):
    got = call("GET", config.url + "/config/billing-api")
    assert got.status == 200
    assert got.body["config"]["currency"] == "EUR"
    services = [s["service"] for s in call("GET", config.url + "/config").body["services"]]
    assert services == ["billing-api", "webhook-dispatcher"]
    assert call("GET", config.url + "/config/nothing-here").status == 404


def test_deploy_returns_the_previous_config_and_restore_brings_it_back(config):
    old = call("GET", config.url + "/config/billing-api").body["config"]
    deployed = call("POST", config.url + "/deploy", {"service": "billing-api", "config": {"maintenance": True}})
    assert deployed.status == 200
    assert deployed.body["version"] == 2
    assert call("GET", config.url + "/config/billing-api").body["config"] == {"maintenance": True}
    snap = deployed.body["snapshot_id"]
    assert call("GET", f"{config.url}/snapshots/{snap}").body["config"] == old
    restored = call("POST", config.url + "/restore", {"snapshot_id": snap})
    assert restored.status == 200
    assert restored.body["service"] == "billing-api"
    assert restored.body["config"] == old
    got = call("GET", config.url + "/config/billing-api").body
    assert got["config"] == old
    assert got["version"] == 3
    undo = call("POST", config.url + "/restore", {"snapshot_id": restored.body["snapshot_id"]})
    assert undo.body["config"] == {"maintenance": True}


def test_first_deploy_of_a_service_can_be_undone(config):
    first = call("POST", config.url + "/deploy", {"service": "search", "config": {"replicas": 2}})
    assert first.status == 200
    second = call("POST", config.url + "/deploy", {"service": "search", "config": {"replicas": 5}})
    assert call("GET", config.url + "/config/search").body["config"] == {"replicas": 5}
    call("POST", config.url + "/restore", {"snapshot_id": second.body["snapshot_id"]})
    assert call("GET", config.url + "/config/search").body["config"] == {"replicas": 2}
    gone = call("POST", config.url + "/restore", {"snapshot_id": first.body["snapshot_id"]})
    assert gone.body["config"] is None
    assert call("GET", config.url + "/config/search").status == 404


@pytest.mark.parametrize("body, message", [
    ({"service": "billing-api", "config": "on"}, "config must be a JSON object"),
    ({"service": "../etc", "config": {}}, "service must be"),
    ({"service": "billing-api"}, "missing field(s): config"),
    ({"service": "billing-api", "config": {}, "force": True}, "unknown field(s): force"),
])
def test_invalid_deploys_are_400(config, body, message):
    reply = call("POST", config.url + "/deploy", body)
    assert reply.status == 400
    assert message in reply.body["error"]
    assert call("GET", config.url + "/config/billing-api").body["version"] == 1


def test_restore_of_an_unknown_snapshot_is_404(config):
    reply = call("POST", config.url + "/restore", {"snapshot_id": "snap_0000"})
    assert reply.status == 404
    assert call("POST", config.url + "/restore", {"snapshot_id": 7}).status == 400
