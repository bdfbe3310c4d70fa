"""A supervised OPA (policy.opa.supervise) that dies is restarted, against
the real opa binary: every call blocks with a clear reason while it is down,
each restart is logged at WARNING with the exit status, and the restarted
process (a new pid) decides again under the service's current revision."""

from __future__ import annotations

import logging
import os
import shutil
import signal

import pytest

from enforcer.config import OpaConfig
from enforcer.errors import EngineUnavailable
from enforcer.policy.bundle import build_bundle
from enforcer.policy.evaluate import evaluate_decision
from enforcer.policy.opa import OpaEngine, free_port
from tests.policy.opa_helpers import (
    ALLOW,
    GRANT,
    MAIN,
    build,
    call,
    eventually,
    opa_binary,
    pushed,
    sidecar_runs,
    write_rego,
)


def answered(engine: OpaEngine, action: str) -> str | None:
    try:
        return engine.evaluate(call(action))["outcome"]
    except EngineUnavailable:
        return None


def test_a_killed_supervised_opa_blocks_while_down_and_comes_back_with_the_policy(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="enforcer.policy.opa")
    binary = tmp_path / "bin" / "opa"
    binary.parent.mkdir()
    shutil.copy2(opa_binary(), binary)
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW)
    ps = build(rego)
    port = free_port()
    engine = OpaEngine(ps, OpaConfig(port=port, timeout_s=5, supervise=True, binary=str(binary)))
    try:
        assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"
        process = engine._sidecar.process
        first_pid = process.pid

        # Keep the outage open for as long as the test looks at it: with the
        # binary gone, restarts fail (and are retried) until it is back.
        hidden = binary.with_name("opa.away")
        binary.rename(hidden)
        os.kill(first_pid, signal.SIGKILL)

        def blocked_reason():
            with pytest.raises(EngineUnavailable) as e:
                engine.evaluate(call("read_invoice"))
            return "exited with status -9" in str(e.value) and str(e.value)

        reason = eventually("a call blocked because the supervised OPA exited", blocked_reason)
        assert "SIGKILL" in reason and "blocked" in reason
        # Through the pipeline's path: a BLOCK from the engine gate, naming why.
        for action in ("read_invoice", "bulk_export"):
            d = evaluate_decision(engine, call(action), decision_id="d")
            assert (d.outcome, d.gate, d.policy_revision) == ("block", "engine", ps.revision)
            assert "exited with status -9" in d.reason
        eventually("the exit logged at WARNING with its status",
                   lambda: [r for r in caplog.records
                            if r.levelno == logging.WARNING and "status -9" in r.getMessage()])

        hidden.rename(binary)
        eventually("decisions answered again", lambda: answered(engine, "read_invoice") == "approve")
        assert process.pid != first_pid
        assert sidecar_runs(port) == pushed(ps)
        assert engine.evaluate(call("bulk_export"))["outcome"] == "block"
        assert [r for r in caplog.records
                if r.levelno == logging.WARNING and "restarted as pid" in r.getMessage()]
    finally:
        engine.close()
    assert process._watcher is None and process._proc.poll() is not None  # stopped, not restarted


def test_a_restart_after_a_reload_pushes_the_reloaded_set(tmp_path):
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW, grant=GRANT)
    old = build(rego)
    port = free_port()
    first = OpaEngine(old, OpaConfig(port=port, timeout_s=5, supervise=True, binary=opa_binary()))
    try:
        assert first.evaluate(call("bulk_export"))["outcome"] == "approve"
        write_rego(rego, grant=None)
        new = build(rego)
        second = first.derive(new)
        first.close()  # retired: the supervised OPA moved to `second`
        process = second._sidecar.process
        first_pid = process.pid
        os.kill(first_pid, signal.SIGKILL)
        eventually("decisions answered again", lambda: answered(second, "read_invoice") == "approve")
        assert process.pid != first_pid
        assert sidecar_runs(port) == pushed(new)  # the current set, not the one it started with
        assert second.evaluate(call("bulk_export"))["outcome"] == "block"
    finally:
        second.close()


def test_a_killed_supervised_bundle_opa_reloads_its_bundle(tmp_path):
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW)
    ps = build(rego)
    bundle = build_bundle(ps, tmp_path / "aecl.tar.gz")
    engine = OpaEngine(ps, OpaConfig(port=free_port(), timeout_s=5, supervise=True, bundle=bundle,
                                     binary=opa_binary()))
    try:
        assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"
        process = engine._sidecar.process
        first_pid = process.pid
        os.kill(first_pid, signal.SIGKILL)
        eventually("decisions answered again", lambda: answered(engine, "read_invoice") == "approve")
        assert process.pid != first_pid
        d = evaluate_decision(engine, call("bulk_export"), decision_id="d")
        assert (d.outcome, d.gate, d.policy_revision) == ("block", "allowlist", ps.revision)
    finally:
        engine.close()
