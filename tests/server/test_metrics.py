"""The Prometheus endpoint counts what the audit log records."""

from __future__ import annotations

import urllib.request

import grpc
import pytest

from tests.conftest import Service, free_port, write_config
from tests.server.test_acceptance import decide, execute, start


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_actions_are_counted_by_agent_kind_and_outcome(tmp_path):
    port = free_port()
    svc = Service(write_config(tmp_path, metrics={"listen": f"127.0.0.1:{port}"}))
    try:
        task = start(svc)
        decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        decide(svc, task, "delete_record", {"record_id": "r"})
        decide(svc, task, "delete_record", {"record_id": "r"})
        execute(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        # An agent without a manifest has no key, so it is refused at StartTask;
        # a known agent's token used under a made-up id is refused at Decide.
        with pytest.raises(grpc.RpcError) as err:
            start(svc, agent="made_up_agent_1")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}, agent="made_up_agent_2")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        m = scrape(port)
        assert m['aecl_actions_total{agent="finance_agent_v2",kind="decision",outcome="block"}'] == 2
        assert m['aecl_actions_total{agent="finance_agent_v2",kind="decision",outcome="approve"}'] == 2
        assert m['aecl_actions_total{agent="finance_agent_v2",kind="execution",outcome="succeeded"}'] == 1
        # Agent ids from requests are untrusted: unknown ones share one label.
        assert m['aecl_actions_total{agent="unknown",kind="auth_refused",outcome="refused"}'] == 2
        assert not any("made_up_agent" in k for k in m)
        assert m['aecl_auth_refusals_total{reason="missing_credential"}'] == 1
        assert m['aecl_auth_refusals_total{reason="wrong_agent"}'] == 1
        assert m['aecl_decision_latency_seconds_count{rpc="Decide"}'] == 3  # refusals are not decisions
    finally:
        svc.stop()
