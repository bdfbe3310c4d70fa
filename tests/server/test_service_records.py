"""A restart leaves a trace: the service logs its start (once listening) and
its stop, with version, configuration digest, policy revision and engine."""

from __future__ import annotations

import json

from enforcer import __version__
from enforcer.audit.records import ServiceRecord, parse_record
from tests.conftest import Service, write_config


def records(svc):
    return [parse_record(json.loads(line)["record"]) for line in svc.log_lines()]


def test_start_and_stop_are_logged_with_what_ran(tmp_path):
    config = write_config(tmp_path)
    svc = Service(config)
    svc.stop()
    again = Service(config)
    again.stop()
    services = [r for r in records(svc) if isinstance(r, ServiceRecord)]
    assert [r.event for r in services] == ["start", "stop", "start", "stop"]
    first = services[0]
    assert first.version == __version__ and first.engine == "embedded"
    assert first.policy_applied.startswith("sha256:") and first.config_digest.startswith("sha256:")
    assert first.listen == svc.address and first.pid > 0
    assert services[2].pid != first.pid and services[2].config_digest == first.config_digest
    assert records(svc)[0] is not None and isinstance(records(svc)[0], ServiceRecord)


def test_another_configuration_has_another_digest(tmp_path):
    a = Service(write_config(tmp_path / "a"))
    a.stop()
    b = Service(write_config(tmp_path / "b", sandbox={"call_timeout_s": 7}))
    b.stop()
    digest = [r.config_digest for r in records(a) if isinstance(r, ServiceRecord)][0]
    other = [r.config_digest for r in records(b) if isinstance(r, ServiceRecord)][0]
    assert digest != other
