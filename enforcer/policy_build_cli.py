"""`aecl policy build`: the service's policy set as an OPA bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from enforcer.config import DEFAULT_CONFIG


def _cmd_policy_build(args: argparse.Namespace) -> int:
    from enforcer.config import load_config
    from enforcer.policy.bundle import build_bundle
    from enforcer.policy.reload import load_policy_set

    # The service's own loader, so the revision is the one it reports (and a
    # bad manifest or registry stops the build as it stops the service).
    policy_set = load_policy_set(load_config(Path(args.config))).policy_set
    out = build_bundle(policy_set, Path(args.out))
    print(f"bundle:   {out}")
    print(f"revision: {policy_set.revision}")
    return 0


def add_build_parser(psub: argparse._SubParsersAction) -> None:
    b = psub.add_parser(
        "build", help="build an OPA bundle of the service's policy set",
        description="Compile the policy set exactly as `aecl serve` does (Rego modules and data files from "
                    "policy.rego_dir, agent manifests and risk/HITL settings as data.aecl.config) and write it as a standard "
                    "OPA bundle (.tar.gz with /.manifest, /data.json and the non-test modules). The bundle's "
                    "revision is the policy revision the service reports; the output is byte-identical for "
                    "the same inputs. Serve it to OPA sidecars (bundle plugin) and set policy.opa.bundle so "
                    "the service checks that its sidecar runs exactly this revision.",
    )
    b.add_argument("--config", default=DEFAULT_CONFIG, help=f"service config file (default {DEFAULT_CONFIG})")
    b.add_argument("--out", required=True, metavar="FILE", help="bundle file to write, e.g. build/aecl-bundle.tar.gz")
    b.set_defaults(func=_cmd_policy_build)
