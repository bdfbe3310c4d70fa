"""`aecl policy replay`: a log of real decisions (made by the real pipeline),
replayed under the unchanged policy and under copies of rego/ with one rule
flipped. The expected changes are computed from the recorded inputs alone,
not by asking a policy engine."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from pathlib import Path

import pytest

from enforcer.audit.records import DecisionRecord
from enforcer.cli import main
from enforcer.config import load_config
from enforcer.errors import MalformedDecision
from enforcer.manifests import load_agents
from enforcer.pipeline.request import CallRequest, StartTaskRequest
from enforcer.policy.replay import LogReadError, read_log, render_report, replay
from enforcer.policy_cli import _candidate_engine
from enforcer.server.app import build_components
from tests.conftest import EXAMPLES, REPO, write_config

N_DECISIONS = 1200
FINANCE = "finance_agent_v2"
UNKNOWN_AGENTS = ("ghost_agent", "intruder-7")
TASKS = [  # (declared_goal, declared_actions)
    ("pay vendor invoices: transfer funds", ()),
    ("process invoices", ("read_invoice", "transfer_funds")),
    ("monthly payment report", ("generate_payment_report", "read_vendor_profile")),
    ("summarise invoices", ()),
    ("generate payment report and delete record of old vendor", ()),
]
ACTIONS = ["read_invoice", "read_vendor_profile", "generate_payment_report", "transfer_funds",
           "delete_record", "bulk_export", "modify_iam_policy"]


def _args(rng: random.Random, action: str) -> dict:
    """Args that match each tool's args_schema (examples/tools.yaml): a call
    that does not is refused before any decision, and this log is of decisions."""
    if action == "transfer_funds":
        amount = rng.choice([10, 1_000, 49_999, 50_000, 50_001, 75_000, 250_000, 100_000])
        return {"vendor": f"V-{rng.randint(1, 9)}", "amount": amount}
    if action == "read_invoice":
        return {"invoice_id": f"INV-{rng.randint(1, 999)}"}
    if action == "delete_record":
        return {"record_id": f"r{rng.randint(1, 99)}"}
    if action in ("read_vendor_profile", "generate_payment_report"):
        return {"vendor_id": "V-17"}
    if action == "bulk_export":
        return {"table": "vendors"}
    if action == "modify_iam_policy":
        return {"principal": "svc-reports", "grant": ["reports:read"]}
    return {}


async def _drive(components, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    pipeline = components.pipeline
    # In process, no transport authenticates: without a token issuer the
    # pipeline starts tasks for agents that have no manifest too, so the log
    # keeps the policy's own `unknown agent` blocks (over gRPC such agents are
    # refused at StartTask, having no credential).
    pipeline.tokens = None
    now = [1_700_000_000.0]
    pipeline.clock = lambda: now[0]
    tasks: list[tuple[str, str]] = []
    for agent in (FINANCE, FINANCE, FINANCE, *UNKNOWN_AGENTS):
        for goal, declared in TASKS:
            started = await pipeline.start_task(StartTaskRequest(agent, goal, tuple(declared)))
            tasks.append((started.task_id, agent))
    for i in range(n):
        task_id, agent = rng.choice(tasks)
        action = rng.choice(ACTIONS)
        # Every 40th call comes after its task's deadline: a limits block.
        now[0] = 1_700_000_000.0 + (5_000.0 if i % 40 == 39 else rng.uniform(1, 1_000))
        await pipeline.decide(CallRequest(
            rpc="Decide", task_id=task_id, agent_id=agent, tool=action, args=_args(rng, action),
            untrusted_input_source=rng.random() < 0.3,
            triggering_input="email from vendor" if rng.random() < 0.2 else "",
        ))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(config path, audit log path, decision records) of N_DECISIONS real decisions."""
    tmp = tmp_path_factory.mktemp("replay")
    config_path = write_config(tmp)
    components = build_components(load_config(config_path))
    try:
        asyncio.run(_drive(components, N_DECISIONS))
    finally:
        components.close()
    log = tmp / "audit.jsonl"
    decisions = [(n, e["record"]) for n, e in enumerate(read_log(log), start=1)
                 if e["record"]["kind"] == "decision"]
    assert len(decisions) == N_DECISIONS
    return config_path, log, decisions


def _policy_copy(tmp_path: Path, edits: dict[str, tuple[str, str]] | None = None) -> Path:
    """A copy of rego/, with `old` replaced by `new` in the named files."""
    dest = tmp_path / "candidate"
    shutil.copytree(REPO / "rego", dest)
    for name, (old, new) in (edits or {}).items():
        path = dest / "aecl" / name
        source = path.read_text()
        assert source.count(old) == 1, f"{name} no longer contains {old!r}: update this test's flip"
        path.write_text(source.replace(old, new))
    return dest


def _replay(config_path: Path, log: Path, policy: Path):
    engine = _candidate_engine(load_config(config_path), policy, "embedded")
    try:
        return replay(read_log(log), engine), engine.revision
    finally:
        engine.close()


def test_the_log_is_a_varied_mix(recorded):
    _, _, decisions = recorded
    outcomes = {r["outcome"] for _, r in decisions}
    gates = {r["gate"] for _, r in decisions}
    assert outcomes == {"approve", "escalate", "block"}
    assert {"allowlist", "limits", "intent"} <= gates
    assert {r["agent_id"] for _, r in decisions} == {FINANCE, *UNKNOWN_AGENTS}
    amounts = {r["policy_input"]["action"]["args"].get("amount") for _, r in decisions
               if r["action_name"] == "transfer_funds"}
    assert {49_999, 50_000, 50_001} <= amounts
    assert all(isinstance(r.get("policy_input"), dict) for _, r in decisions)


def test_unchanged_policy_changes_nothing(recorded, tmp_path):
    config_path, log, decisions = recorded
    report, revision = _replay(config_path, log, _policy_copy(tmp_path))
    assert report.replayed == N_DECISIONS
    assert report.changed == 0 and report.changes == []
    assert report.unchanged == N_DECISIONS
    assert report.reworded == [] and report.skipped == [] and report.engine_errors == 0
    # Same Rego, same data: the very revision the service recorded.
    assert set(report.recorded_revisions) == {revision}
    assert report.summary_line() == f"{N_DECISIONS} decisions replayed, 0 would change"


def test_flipped_intent_rule_changes_exactly_the_unblocked_reads(recorded, tmp_path):
    """Flip: reads no longer pass the intent gate by being reads. Every call of
    a read tool that was not already blocked must now be blocked by intent, and
    nothing else may change."""
    config_path, log, decisions = recorded
    policy = _policy_copy(tmp_path, {
        "intent.rego": ('allow if input.tool.access == "read"\n', 'allow if input.tool.access == "read-only-never"\n'),
    })
    report, _ = _replay(config_path, log, policy)

    expected = {r["event_id"] for _, r in decisions
                if r["policy_input"]["tool"]["access"] == "read" and r["outcome"] != "block"}
    assert len(expected) > 100  # the flip matters on this log
    assert {c.event_id for c in report.changes} == expected
    assert report.changed == len(expected) == len(report.changes)
    assert report.unchanged == N_DECISIONS - len(expected)
    by_event = {r["event_id"]: (n, r) for n, r in decisions}
    for c in report.changes:
        line, rec = by_event[c.event_id]
        assert c.line == line and c.decision_id == rec["decision_id"]
        assert (c.agent_id, c.action_name) == (rec["agent_id"], rec["action_name"])
        assert (c.old.outcome, c.old.gate, c.old.reason) == (rec["outcome"], rec["gate"], rec["reason"])
        assert (c.new.outcome, c.new.gate) == ("block", "intent")
        assert c.new.reason.startswith("Action scope exceeds declared task intent")
    transitions = report.transitions()
    assert set(transitions) <= {"approve->block", "escalate->block"}
    assert transitions["approve->block"] == sum(
        1 for _, r in decisions if r["event_id"] in expected and r["outcome"] == "approve")
    parts = ", ".join(f"{n} {t}" for t, n in sorted(transitions.items(), key=lambda kv: (-kv[1], kv[0])))
    assert report.summary_line() == f"{N_DECISIONS} decisions replayed, {len(expected)} would change ({parts})"


def test_flipped_block_list_rewords_but_changes_no_outcome(recorded, tmp_path):
    """Flip: the agent's block list is ignored. Those actions are on no allow
    list either, so they stay blocked, now for another reason."""
    config_path, log, decisions = recorded
    policy = _policy_copy(tmp_path, {
        "allowlist.rego": ("blocked if input.action.name in agent.blocked_actions",
                           "blocked if input.action.name in agent.no_such_list"),
    })
    report, _ = _replay(config_path, log, policy)
    blocked_list = set(load_agents(EXAMPLES / "agents")[FINANCE].blocked_actions)
    expected = {r["event_id"] for _, r in decisions
                if r["agent_id"] == FINANCE and r["action_name"] in blocked_list}
    assert len(expected) > 100
    assert report.changes == []
    assert {c.event_id for c in report.reworded} == expected
    assert all(c.new.outcome == "block" and c.new.gate == "allowlist" and "no allow list" in c.new.reason
               and "block list" in c.old.reason for c in report.reworded)


def test_opa_replays_the_embedded_log_the_same_way(recorded, tmp_path):
    """The same replay through a private OPA: no change under the unchanged
    policy, the same changes under the flipped one."""
    config_path, log, _ = recorded
    config = load_config(config_path)
    flipped = _policy_copy(tmp_path / "flipped", {
        "intent.rego": ('allow if input.tool.access == "read"\n', 'allow if input.tool.access == "nope"\n'),
    })
    results = {}
    for name, policy in (("same", _policy_copy(tmp_path / "same")), ("flipped", flipped)):
        for engine_name in ("embedded", "opa"):
            engine = _candidate_engine(config, policy, engine_name)
            try:
                assert engine.name == engine_name
                report = replay(read_log(log), engine)
            finally:
                engine.close()
            assert report.engine_errors == 0
            results[name, engine_name] = [(c.event_id, c.new.outcome, c.new.gate, c.new.reason)
                                          for c in report.changes]
    assert results["same", "opa"] == results["same", "embedded"] == []
    assert results["flipped", "opa"] == results["flipped", "embedded"] != []


def test_engine_errors_count_as_block():
    class Broken:
        name, revision, blocking = "broken", "sha256:x", False

        def evaluate(self, policy_input):
            raise MalformedDecision("policy returned no decision (undefined)")

    def entry(outcome, **extra):
        record = DecisionRecord(timestamp="2026-12-01T00:00:00.000000Z", event_id=f"evt_{outcome}",
                                decision_id="dec_1", agent_id="a", rpc="Decide", action_name="x",
                                outcome=outcome, gate="risk", rule="risk.x", reason="r",
                                policy_input={"agent_id": "a"}, **extra)
        return {"record": record.to_dict()}

    entries = [entry("approve"), entry("escalate"), entry("block"),
               {"record": {"kind": "task_started", "outcome": "started"}},
               {"record": {"kind": "decision", "event_id": "evt_old", "outcome": "approve"}}]
    report = replay(entries, Broken())
    assert report.entries == 5 and report.replayed == 3 and report.engine_errors == 3
    assert [c.transition for c in report.changes] == ["approve->block", "escalate->block"]
    assert all(c.new.gate == "engine" and "failing closed" in c.new.reason for c in report.changes)
    assert [(s.line, s.event_id) for s in report.skipped] == [(5, "evt_old")]
    assert "policy_input" in report.skipped[0].reason
    text = render_report(report)
    assert text.splitlines()[-1] == "3 decisions replayed, 2 would change (1 approve->block, 1 escalate->block)"


# -- the command -------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["policy", "replay", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_exit_codes_table_and_json(recorded, tmp_path, capsys):
    config_path, log, decisions = recorded
    same = _policy_copy(tmp_path / "same")
    rc, out, _ = _cli(capsys, "--log", str(log), "--policy", str(same), "--config", str(config_path))
    assert rc == 0
    assert out.splitlines()[-1] == f"{N_DECISIONS} decisions replayed, 0 would change"

    flipped = _policy_copy(tmp_path / "flipped", {
        "intent.rego": ('allow if input.tool.access == "read"\n', 'allow if input.tool.access == "nope"\n'),
    })
    rc, out, _ = _cli(capsys, "--log", str(log), "--policy", str(flipped), "--config", str(config_path))
    assert rc == 1
    lines = out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("LINE"))
    assert lines[header].split() == ["LINE", "EVENT_ID", "AGENT", "ACTION", "CHANGE", "GATE", "OLD", "REASON",
                                     "NEW", "REASON"]
    rows = [ln for ln in lines[header + 1:] if ln.strip()]
    rows = rows[: next(i for i, ln in enumerate(rows) if "decisions replayed" in ln or ln.startswith("note:"))]
    # Aligned: every row starts each column where the header does.
    col = lines[header].index("EVENT_ID")
    assert all(r[col:col + 4] == "evt_" for r in rows)
    assert "would change (" in lines[-1]

    rc, out, _ = _cli(capsys, "--log", str(log), "--policy", str(flipped), "--config", str(config_path), "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["replayed"] == N_DECISIONS and doc["changed"] == len(doc["changes"]) == len(rows)
    assert doc["changed"] + doc["unchanged"] == N_DECISIONS
    first = doc["changes"][0]
    assert set(first) >= {"line", "event_id", "decision_id", "agent_id", "action_name", "old", "new", "transition"}
    assert set(first["old"]) == set(first["new"]) == {"outcome", "gate", "reason", "risk_score"}
    assert sum(doc["transitions"].values()) == doc["changed"]


def test_cli_names_a_corrupt_line(recorded, tmp_path, capsys):
    config_path, log, _ = recorded
    lines = log.read_text().splitlines(keepends=True)
    lines[56] = '{"seq": 56, "record": {"kind": "decis\n'  # line 57, cut mid-entry
    bad = tmp_path / "corrupt.jsonl"
    bad.write_text("".join(lines))
    rc, out, err = _cli(capsys, "--log", str(bad), "--policy", str(REPO / "rego"), "--config", str(config_path))
    assert rc == 2
    assert f"{bad}: line 57: not valid JSON" in err
    with pytest.raises(LogReadError) as e:
        list(read_log(bad))
    assert e.value.line == 57

    rc, _, err = _cli(capsys, "--log", str(tmp_path / "missing.jsonl"), "--policy", str(REPO / "rego"),
                      "--config", str(config_path))
    assert rc == 2 and "missing.jsonl" in err


def test_cli_verifies_first_when_given_a_key(recorded, tmp_path, capsys):
    config_path, log, decisions = recorded
    pub = config_path.parent / "keys" / "audit.pub"
    rc, out, _ = _cli(capsys, "--log", str(log), "--policy", str(REPO / "rego"), "--config", str(config_path),
                      "--pubkey", str(pub))
    assert rc == 0 and "0 would change" in out

    # A decision whose input was dropped: replay skips it, verification refuses the log.
    raw = log.read_text().splitlines()
    line, rec = decisions[10]
    entry = json.loads(raw[line - 1])
    del entry["record"]["policy_input"]
    raw[line - 1] = json.dumps(entry)  # every other line keeps its signed bytes
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(ln + "\n" for ln in raw))
    rc, out, _ = _cli(capsys, "--log", str(edited), "--policy", str(REPO / "rego"), "--config", str(config_path),
                      "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["skipped"] == 1 and doc["replayed"] == N_DECISIONS - 1
    assert doc["skipped_decisions"][0]["line"] == line
    assert doc["skipped_decisions"][0]["event_id"] == rec["event_id"]
    rc, _, err = _cli(capsys, "--log", str(edited), "--policy", str(REPO / "rego"), "--config", str(config_path),
                      "--pubkey", str(pub))
    assert rc == 2 and f"line {line}" in err and "does not verify" in err


def test_cli_help_documents_exit_codes_and_verify(capsys):
    with pytest.raises(SystemExit):
        main(["policy", "replay", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 when no decision would change, 1 when some would, 2 on errors" in text
    assert "aecl verify" in text
