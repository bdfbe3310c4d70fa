"""Push mode against the real opa binary: the sidecar runs exactly the set
the revision names. A module deleted by a reload is deleted from the sidecar
(a grant in it must not outlive its file), and a push that fails half-way
leaves either the previous set fully in force or the engine blocking every
call until a later push succeeds, never a mix of the two."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import requests

from enforcer.config import OpaConfig
from enforcer.errors import EngineUnavailable, PolicyError
from enforcer.policy.decision import parse_decision
from enforcer.policy.opa import OpaEngine
from tests.policy.opa_helpers import (
    ALLOW,
    BROKEN,
    DENY,
    GRANT,
    MAIN,
    FaultyProxy,
    build,
    call,
    from_nth_policy_write,
    only_nth_policy_write,
    pushed,
    sidecar_runs,
    write_rego,
)


@pytest.fixture
def proxy(sidecar):
    p = FaultyProxy(sidecar.port)
    yield p
    p.close()


def outcome(engine: OpaEngine, action: str) -> str:
    return parse_decision(engine.evaluate(call(action)), revision=engine.revision, decision_id="d").outcome


@pytest.mark.parametrize(("extra", "source", "action", "before", "after"), [
    ("grant", GRANT, "bulk_export", "approve", "block"),
    ("deny", DENY, "read_invoice", "block", "approve"),
], ids=["deleted-grant", "deleted-deny"])
def test_a_module_deleted_by_a_reload_is_gone_from_the_sidecar(tmp_path, sidecar, extra, source, action,
                                                               before, after):
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW, **{extra: source})
    old = build(rego)
    first = OpaEngine(old, OpaConfig(port=sidecar.port, timeout_s=5))
    assert outcome(first, action) == before
    assert sidecar_runs(sidecar.port) == pushed(old)

    write_rego(rego, **{extra: None})
    new = build(rego)
    second = first.derive(new)
    # No trace of the deleted module: the sidecar runs exactly the new set.
    modules, _, _ = sidecar_runs(sidecar.port)
    assert f"aecl/aecl/{extra}.rego" not in modules
    assert not [m for m in modules.values() if source in m]
    assert sidecar_runs(sidecar.port) == pushed(new)
    assert outcome(second, action) == after
    assert outcome(second, "read_invoice" if extra == "grant" else "bulk_export") == \
        ("approve" if extra == "grant" else "block")
    first.close()
    second.close()


def test_a_module_someone_else_put_in_the_aecl_namespace_is_removed(tmp_path, sidecar):
    """Whatever its id, a module in package aecl.* takes part in the decision:
    the push leaves only the set's own modules there."""
    requests.put(f"http://127.0.0.1:{sidecar.port}/v1/policies/stray", data=GRANT, timeout=5).raise_for_status()
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW)
    ps = build(rego)
    engine = OpaEngine(ps, OpaConfig(port=sidecar.port, timeout_s=5))
    ids = [p["id"] for p in requests.get(f"http://127.0.0.1:{sidecar.port}/v1/policies", timeout=5).json()["result"]]
    assert "stray" not in ids
    assert outcome(engine, "bulk_export") == "block"
    engine.close()


def test_a_push_refused_half_way_leaves_the_previous_set_fully_in_force(tmp_path, sidecar):
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW, grant=GRANT)
    old = build(rego)
    first = OpaEngine(old, OpaConfig(port=sidecar.port, timeout_s=5))
    assert outcome(first, "bulk_export") == "approve"

    # The candidate deletes the grant, changes a module and the data, and
    # ends with a module OPA refuses: everything before it was applied.
    write_rego(rego, grant=None, allow=ALLOW.replace('"read_invoice"', '"read_vendor_profile"'), zz=BROKEN)
    candidate = build(rego, amount_threshold=1)
    with pytest.raises(PolicyError, match="refused") as e:
        first.derive(candidate)
    assert old.revision in str(e.value)  # it says what runs now
    assert sidecar_runs(sidecar.port) == pushed(old)
    # The previous engine stays in force and answers from its own set.
    assert outcome(first, "bulk_export") == "approve"
    assert outcome(first, "read_invoice") == "approve"
    assert outcome(first, "read_vendor_profile") == "block"

    # A later good reload is applied in full.
    write_rego(rego, zz=None)
    fixed = build(rego, amount_threshold=1)
    second = first.derive(fixed)
    assert sidecar_runs(sidecar.port) == pushed(fixed)
    assert outcome(second, "bulk_export") == "block"
    assert outcome(second, "read_vendor_profile") == "approve"
    first.close()
    second.close()


def test_a_push_cut_off_half_way_is_rolled_back(tmp_path, sidecar, proxy):
    """One request of the push is lost (the module delete and put before it
    were applied): the sidecar is rolled back to the previous set, and the new
    engine pushes its own set in full on its first call."""
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW, grant=GRANT)
    old = build(rego)
    first = OpaEngine(old, OpaConfig(port=proxy.port, timeout_s=5))
    assert outcome(first, "bulk_export") == "approve"

    write_rego(rego, grant=None, allow=ALLOW.replace('"read_invoice"', '"read_vendor_profile"'),
               main=MAIN.replace('"granted"', '"granted by the new set"'))
    new = build(rego, amount_threshold=1)
    proxy.fault = only_nth_policy_write(3)  # delete grant, put allow, [put main is lost]
    second = first.derive(new)
    proxy.fault = None
    assert sidecar_runs(sidecar.port) == pushed(old)
    assert outcome(second, "bulk_export") == "block"
    assert outcome(second, "read_vendor_profile") == "approve"
    assert sidecar_runs(sidecar.port) == pushed(new)
    first.close()
    second.close()


def test_a_push_whose_rollback_fails_blocks_every_call_until_a_push_succeeds(tmp_path, sidecar, proxy, caplog):
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW, grant=GRANT)
    old = build(rego)
    first = OpaEngine(old, OpaConfig(port=proxy.port, timeout_s=5))
    assert outcome(first, "bulk_export") == "approve"

    write_rego(rego, grant=None, allow=ALLOW.replace('"read_invoice"', '"read_vendor_profile"'),
               main=MAIN.replace('"granted"', '"granted by the new set"'))
    new = build(rego, amount_threshold=1)
    # The sidecar is unreachable from the third module write on: the push
    # stops half-way and its rollback cannot reach it either.
    proxy.fault = from_nth_policy_write(3)
    second = first.derive(new)
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    caplog.clear()
    # The sidecar holds a mix (no grant any more, the new allow, the old
    # main) and every call on the new engine blocks, loudly.
    for action in ("bulk_export", "read_invoice", "read_vendor_profile"):
        with pytest.raises(EngineUnavailable, match="no complete policy set"):
            second.evaluate(call(action))
    assert [r for r in caplog.records if r.levelno == logging.CRITICAL]
    with pytest.raises(PolicyError):
        first.evaluate(call("bulk_export"))  # the retired engine never answers from the mix either

    proxy.fault = None  # reachable again: the next call pushes the whole set
    assert outcome(second, "bulk_export") == "block"
    assert outcome(second, "read_vendor_profile") == "approve"
    assert sidecar_runs(sidecar.port) == pushed(new)
    first.close()
    second.close()


def test_a_refused_reload_whose_rollback_fails_blocks_the_running_engine(tmp_path, sidecar, proxy, caplog):
    """The candidate is refused half-way and the sidecar is then lost: the
    reload is rejected, and the engine still in force blocks every call
    until it has pushed its own set again."""
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW, grant=GRANT)
    old = build(rego)
    first = OpaEngine(old, OpaConfig(port=proxy.port, timeout_s=5))
    assert outcome(first, "bulk_export") == "approve"

    write_rego(rego, grant=None, zz=BROKEN)
    candidate = build(rego)
    refused = {"n": 0}

    def fault(method: str, path: str) -> str:
        # Once OPA has refused the broken module, nothing but that module
        # reaches it any more (it refuses it again).
        if method == "PUT" and path.endswith("/zz.rego"):
            refused["n"] += 1
            return "pass"
        return "drop" if refused["n"] else "pass"

    proxy.fault = fault
    with pytest.raises(PolicyError, match="refused.*rollback"):
        first.derive(candidate)
    with pytest.raises(EngineUnavailable, match="no complete policy set"):
        first.evaluate(call("bulk_export"))
    assert [r for r in caplog.records if r.levelno == logging.CRITICAL]

    proxy.fault = None
    assert outcome(first, "bulk_export") == "approve"
    assert sidecar_runs(sidecar.port) == pushed(old)
    first.close()


def test_a_sidecar_killed_mid_push_blocks_every_call_until_it_has_the_whole_new_set(tmp_path, sidecar, proxy,
                                                                                    caplog):
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW, grant=GRANT)
    old = build(rego)
    first = OpaEngine(old, OpaConfig(port=proxy.port, timeout_s=5))
    assert outcome(first, "bulk_export") == "approve"

    write_rego(rego, grant=None, allow=ALLOW.replace('"read_invoice"', '"read_vendor_profile"'),
               main=MAIN.replace('"granted"', '"granted by the new set"'))
    new = build(rego, amount_threshold=1)

    def kill() -> None:
        os.kill(sidecar.pid, signal.SIGKILL)
        sidecar._proc.wait()

    proxy.fault = from_nth_policy_write(2, then=kill)
    second = first.derive(new)
    proxy.fault = None  # the proxy passes everything on; the sidecar behind it is dead
    for action in ("bulk_export", "read_invoice", "read_vendor_profile"):
        with pytest.raises(EngineUnavailable):
            second.evaluate(call(action))
    assert [r for r in caplog.records if r.levelno == logging.CRITICAL]

    sidecar.start()  # back, empty
    assert outcome(second, "bulk_export") == "block"
    assert outcome(second, "read_vendor_profile") == "approve"
    assert sidecar_runs(sidecar.port) == pushed(new)
    first.close()
    second.close()
