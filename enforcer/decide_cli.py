"""`aecl decide`: one decision, offline, for policy authors.

The call comes from a JSON file and is checked like a request at the wire
(strict fields, errors naming the field); the policy input is built by the
same code the service uses, so what an author sees is what the service does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enforcer._yaml import describe_validation_error
from enforcer.errors import ConfigError

DESCRIPTION = (
    "Evaluate one tool call offline against the configured policy, manifests and tool registry, "
    "and print the decision as JSON (or, with --explain, which gate and rule decided and why). "
    'Input file: {"agent_id", "tool", "args", "context": {"untrusted_input_source", '
    '"triggering_input"}, "task": {"declared_goal", "declared_actions", "calls_so_far"}}. '
    "The task is what StartTask declared; --goal, --declare and --calls set it from the command line "
    "(over the file's). With no task at all, the task declares the called tool (declared_actions: "
    "[tool]), so the intent gate lets it through and the rule under test decides (a note on stderr "
    "says so). Exit 0 with a decision (a fail-closed BLOCK from an off-shape policy included), 2 on "
    "errors, also when the engine cannot be reached (an OPA sidecar that does not answer)."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Context(_Strict):
    untrusted_input_source: bool = False
    triggering_input: str = ""


class _Task(_Strict):
    declared_goal: str = ""
    declared_actions: list[str] = []
    calls_so_far: int = Field(default=0, ge=0)


class DecideInput(_Strict):
    agent_id: str = Field(min_length=1)
    tool: str = Field(min_length=1)
    args: dict[str, Any] = {}
    context: _Context = _Context()
    task: _Task = _Task()


def add_parser(sub: argparse._SubParsersAction, default_config: str) -> None:
    d = sub.add_parser("decide", help="evaluate one call from a JSON file (no service, no log)",
                       description=DESCRIPTION)
    d.add_argument("--config", default=default_config, help=f"service config file (default {default_config})")
    d.add_argument("--input", required=True, help="the call as JSON")
    d.add_argument("--engine", choices=["embedded", "opa"], help="override the policy engine")
    d.add_argument("--goal", metavar="TEXT", help="the task's declared_goal (the intent gate reads it when "
                                                  "no actions are declared)")
    d.add_argument("--declare", action="append", metavar="ACTION",
                   help="an action the task declares (repeatable); --declare '' declares none")
    d.add_argument("--calls", type=int, metavar="N", help="Execute calls already made in the task")
    d.add_argument("--explain", action="store_true",
                   help="print the deciding gate and rule, the reason and each risk flag's weight")
    d.add_argument("--show-input", action="store_true", help="also print the policy input document")
    d.set_defaults(func=run)


def read_input(path: Path) -> DecideInput:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the input file: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    try:
        return DecideInput.model_validate(raw)
    except ValidationError as e:
        raise describe_validation_error(path, e) from None


def run(args: argparse.Namespace) -> int:
    from enforcer.config import load_config
    from enforcer.pipeline.policy_input import build_policy_input
    from enforcer.pipeline.request import CallRequest
    from enforcer.policy.engine import create_engine
    from enforcer.policy.reload import load_policy_set
    from enforcer.state.store import Task

    config = load_config(Path(args.config))
    if args.engine:
        config = config.model_copy(update={"policy": config.policy.model_copy(update={"engine": args.engine})})
    doc = with_task_options(read_input(Path(args.input)), args)
    loaded = load_policy_set(config)
    tool = loaded.registry.get(doc.tool)
    if tool is None:
        raise ConfigError(f"{args.input}: field 'tool': unknown tool '{doc.tool}'")
    engine = create_engine(loaded.policy_set, config.policy)
    now = time.time()
    task = Task(
        task_id="tsk_offline", agent_id=doc.agent_id, declared_goal=doc.task.declared_goal,
        declared_actions=tuple(doc.task.declared_actions), started_at=now,
        expires_at=now + config.sandbox.task_timeout_s, calls_so_far=doc.task.calls_so_far,
    )
    req = CallRequest(
        rpc="Decide", task_id=task.task_id, agent_id=doc.agent_id, tool=doc.tool, args=doc.args,
        untrusted_input_source=doc.context.untrusted_input_source, triggering_input=doc.context.triggering_input,
    )
    policy_input = build_policy_input(req, tool, task, now)
    try:
        decision = decide_offline(engine, policy_input, config)
    finally:
        engine.close()
    if args.explain:
        print(explain(decision))
        if args.show_input:
            print(json.dumps(policy_input, indent=2))
        return 0
    out = decision.explanation()
    if args.show_input:
        out["input"] = policy_input
    print(json.dumps(out, indent=2))
    return 0


def with_task_options(doc: DecideInput, args: argparse.Namespace) -> DecideInput:
    """The task from the file, with --goal/--declare/--calls over it. With
    no task anywhere, one that declares the called tool: a write would
    otherwise always stop at the intent gate and hide the rule being tested."""
    given = "task" in doc.model_fields_set
    task = doc.task
    if args.goal is not None:
        task = task.model_copy(update={"declared_goal": args.goal})
    if args.declare is not None:
        task = task.model_copy(update={"declared_actions": [a for a in args.declare if a]})
    if args.calls is not None:
        if args.calls < 0:
            raise ConfigError("--calls must not be negative")
        task = task.model_copy(update={"calls_so_far": args.calls})
    if not given and args.goal is None and args.declare is None:
        task = task.model_copy(update={"declared_actions": [doc.tool]})
        print(f"note: no task given: it declares the called tool ({doc.tool}), so the intent gate passes; "
              "use --goal or --declare (or \"task\" in the input) to test the intent gate", file=sys.stderr)
    return doc.model_copy(update={"task": task})


def decide_offline(engine, policy_input: dict[str, Any], config) -> Any:
    """The decision as the service would make it, except that an engine that
    cannot be reached is an error here, not a BLOCK: an author asking what
    the policy decides must not read the sidecar's absence as the answer."""
    from enforcer.errors import AeclError, EngineUnavailable, MalformedDecision, PolicyError
    from enforcer.policy.decision import blocked_by_error, parse_decision

    try:
        return parse_decision(engine.evaluate(policy_input), revision=engine.revision, decision_id="offline")
    except MalformedDecision as e:
        print(f"note: the policy's answer is outside the decision schema ({e}); the service blocks it",
              file=sys.stderr)
        return blocked_by_error(e, revision=engine.revision, decision_id="offline")
    except PolicyError as e:
        if engine.name == "opa":
            opa = config.policy.opa
            raise AeclError(f"the OPA sidecar at {opa.host}:{opa.port} cannot decide this call: {e}. Start one "
                            f"(opa run --server --addr {opa.host}:{opa.port}), set policy.opa.supervise: true, "
                            "or use --engine embedded") from None
        if isinstance(e, EngineUnavailable):
            raise AeclError(f"the embedded engine cannot decide this call: {e}") from None
        print(f"note: the engine failed ({e}); the service blocks such a call", file=sys.stderr)
        return blocked_by_error(e, revision=engine.revision, decision_id="offline")


def explain(decision) -> str:
    lines = [
        f"outcome   {decision.outcome.upper()}",
        f"gate      {decision.gate}",
        f"rule      {decision.rule or '-'}",
        f"reason    {decision.reason}",
        f"risk      {decision.risk_score:g}",
    ]
    if decision.risk_weights:
        for flag, weight in sorted(decision.risk_weights.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  +{weight:<5g} {flag}")
        lines.append("  (the sum, capped at 1, is the risk score)")
    else:
        lines.append("  no risk flags raised")
    if decision.outcome == "escalate":
        lines.append(f"approval  expires {decision.approval_ttl_seconds}s after the request")
    lines.append(f"revision  {decision.policy_revision}")
    return "\n".join(lines)
