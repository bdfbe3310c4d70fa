"""`aecl credentials ...` (keys on disk) and `aecl admin ...` (revocation
over AdminService)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from enforcer.config import DEFAULT_CONFIG

KINDS = ("agent", "approver", "admin")


def _config(args: argparse.Namespace):
    from enforcer.config import load_config

    return load_config(Path(args.config))


def _hand_over(new, out: str | None) -> None:
    if new.key_file is not None:
        print(f"{new.kind} {new.principal_id}: key {new.hash.key_id} written to {new.key_file} (mode 0600); "
              "its hash is all the service keeps")
    else:
        print(new.key)
        print(f"(key {new.hash.key_id} for {new.kind} {new.principal_id}: shown once, the service keeps only "
              "its hash; a running service accepts it after its next reload, within a second or two)",
              file=__import__("sys").stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from enforcer.identity.provision import ensure_token_key

    config = _config(args)
    made = ensure_token_key(config)
    path = config.identity.token_signing_key
    print(f"token signing key: {path} ({'created' if made else 'exists'})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from enforcer.identity.provision import provision_demo

    config = _config(args)
    made = provision_demo(config)
    for new in made:
        print(f"created {new.kind} key {new.hash.key_id}: {new.key_file}")
    print(f"credentials: {config.identity.credentials_dir} ({len(made)} new key(s); the keys are the *.key files, "
          "mode 0600; hashes/ holds what the service checks)")
    return 0


def cmd_add(args: argparse.Namespace, kind: str, principal_id: str) -> int:
    from enforcer.identity.provision import add_key

    new = add_key(_config(args), kind, principal_id, key_file=Path(args.out) if args.out else None)  # type: ignore[arg-type]
    _hand_over(new, args.out)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from enforcer.identity.provision import remove_key

    path = remove_key(_config(args), args.role, args.id, args.key_id)
    print(f"{args.role} {args.id}: key {args.key_id} removed from {path}; a running service refuses it after "
          "its next reload (within a second or two when it watches its files; `aecl policy reload` now)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from enforcer.identity.directory import build_directory
    from enforcer.manifests import load_agents

    config = _config(args)
    ident = config.identity
    d = build_directory(load_agents(config.agents_dir), ident.approvers, ident.admins, ident.credentials_dir)
    rows = sorted((c.kind, c.principal_id, kid, c.key.created_at) for kid, c in d.keys.items())
    certs = sorted((k, pid, f"{slot}={value}") for (slot, value), (k, pid) in d.certificates.items())
    if args.json:
        print(json.dumps({"keys": [dict(zip(("kind", "id", "key_id", "created_at"), r)) for r in rows],
                          "certificates": [dict(zip(("kind", "id", "identity"), r)) for r in certs]}, indent=2))
        return 0
    for kind, pid, kid, created in rows:
        print(f"{kind:9} {pid:24} key  {kid}  created {created}")
    for kind, pid, ident_text in certs:
        print(f"{kind:9} {pid:24} cert {ident_text}")
    if not rows and not certs:
        print("no credentials: `aecl credentials add-agent-key AGENT` makes one")
    return 0


def add_credentials_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("credentials", help="make, list and withdraw API keys and the token key",
                       description="API keys of agents, approvers and administrators. A key is shown once; the "
                                   "service keeps its SHA-256 under identity.credentials_dir/hashes, which a "
                                   "running service re-reads on reload (it watches the folder).")
    csub = c.add_subparsers(dest="credentials_command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=DEFAULT_CONFIG, help=f"service config file (default {DEFAULT_CONFIG})")

    i = csub.add_parser("init", help="create the token signing key if it is missing",
                        description="Create identity.token_signing_key (Ed25519, mode 0600) and its .pub if "
                                    "missing. It signs task tokens; it is never the audit key.")
    common(i)
    i.set_defaults(func=cmd_init)

    d = csub.add_parser("demo", help="first-start credentials for every principal without a key",
                        description="`make run` runs this: the token key if missing, and for every agent "
                                    "manifest, approver and admin that has no key yet, a new API key in "
                                    "<credentials_dir>/<id>.key (mode 0600) with its hash. Idempotent.")
    common(d)
    d.set_defaults(func=cmd_demo)

    a = csub.add_parser("add-agent-key", help="a new API key for an agent (printed once)",
                        description="Make a new 256-bit API key for AGENT (which needs a manifest), print it "
                                    "once (or write it to --out, mode 0600) and add its hash.")
    a.add_argument("agent", metavar="AGENT", help="the agent id (its manifest's agent_id)")
    a.add_argument("--out", metavar="FILE", help="write the key to this new file instead of printing it")
    common(a)
    a.set_defaults(func=lambda args: cmd_add(args, "agent", args.agent))

    k = csub.add_parser("add-key", help="a new API key for an approver or administrator",
                        description="Make a new API key for an approver or admin listed in the config's "
                                    "identity section; print it once (or write it to --out, mode 0600).")
    k.add_argument("--role", choices=("approver", "admin"), required=True, help="the principal's role")
    k.add_argument("id", metavar="ID", help="the approver's or admin's id in the config")
    k.add_argument("--out", metavar="FILE", help="write the key to this new file instead of printing it")
    common(k)
    k.set_defaults(func=lambda args: cmd_add(args, args.role, args.id))

    r = csub.add_parser("revoke", help="withdraw one API key (remove its hash)",
                        description="Remove KEY_ID's hash. A running service refuses the key after its next "
                                    "reload. To stop an agent's tasks and tokens at once, use "
                                    "`aecl admin revoke-agent`.")
    r.add_argument("id", metavar="ID", help="the agent id (or approver/admin id with --role)")
    r.add_argument("key_id", metavar="KEY_ID", help="the key id (the middle part of aecl_<key id>_<secret>)")
    r.add_argument("--role", choices=KINDS, default="agent", help="whose key (default agent)")
    common(r)
    r.set_defaults(func=cmd_revoke)

    ls = csub.add_parser("list", help="every key id and certificate identity the service accepts",
                         description="List key ids (never keys) and certificate identities, from the "
                                     "manifests, the config and credentials_dir.")
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    common(ls)
    ls.set_defaults(func=cmd_list)


# -- aecl admin ----------------------------------------------------------------


def cmd_revoke_task(args: argparse.Namespace) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
    from enforcer.connect import call_admin

    r = call_admin(args, "RevokeTask", pb.RevokeTaskRequest(task_id=args.task, reason=args.reason))
    print(f"task {args.task} revoked: its tokens stop working, {r.approvals_cancelled} pending approval(s) "
          f"cancelled (audit entry {r.event_id})")
    return 0


def cmd_revoke_agent(args: argparse.Namespace) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
    from enforcer.connect import call_admin

    r = call_admin(args, "RevokeAgent", pb.RevokeAgentRequest(agent_id=args.agent, reason=args.reason))
    print(f"agent {args.agent} revoked: {r.tasks_revoked} task(s) ended, {r.approvals_cancelled} pending "
          f"approval(s) cancelled; its current keys, certificates and tokens no longer work (audit entry "
          f"{r.event_id}). New keys (`aecl credentials add-agent-key`) work again.")
    return 0


def add_admin_parser(sub: argparse._SubParsersAction) -> None:
    from enforcer.connect import add_connection_options

    ad = sub.add_parser("admin", help="revoke tasks and agents on a running service",
                        description="AdminService calls as an administrator (--admin-key, or an admin client "
                                    "certificate). Each revocation is an audit entry.")
    asub = ad.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    t = asub.add_parser("revoke-task", help="end a task now; its tokens stop working",
                        description="End TASK now: its tokens stop working at once, its pending approvals are "
                                    "cancelled, it cannot be renewed.")
    t.add_argument("task", metavar="TASK", help="the task id (tsk_...)")
    t.add_argument("--reason", default="", help="why (recorded in the audit entry)")
    add_connection_options(t)
    t.set_defaults(func=cmd_revoke_task)
    a = asub.add_parser("revoke-agent", help="revoke an agent's tasks, tokens, keys and certificates",
                        description="Revoke everything AGENT holds now: every task, token, API key and client "
                                    "certificate issued up to this moment.")
    a.add_argument("agent", metavar="AGENT", help="the agent id")
    a.add_argument("--reason", default="", help="why (recorded in the audit entry)")
    add_connection_options(a)
    a.set_defaults(func=cmd_revoke_agent)
