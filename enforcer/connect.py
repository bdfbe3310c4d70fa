"""How the operator CLIs reach a running service: the address, TLS, and the
credential of a role (an administrator's for `aecl policy status/reload`
and `aecl admin ...`, an approver's for `aecl approvals ...`). One set of
options for all of them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_ADDRESS = "127.0.0.1:50051"
ROLE_NAMES = {"admin": "an administrator", "approver": "an approver"}


def key_env(role: str) -> str:
    """The environment variable naming the role's key file: AECL_ADMIN_KEY_FILE, AECL_APPROVER_KEY_FILE."""
    return f"AECL_{role.upper()}_KEY_FILE"


def demo_key(role: str) -> Path:
    """Where `make run` leaves the demo principal's key of the role."""
    return Path(f"var/credentials/{role}.key")


ADMIN_KEY_ENV = key_env("admin")
DEMO_ADMIN_KEY = demo_key("admin")


def add_connection_options(p: argparse.ArgumentParser, role: str = "admin", *,
                           timeout_help: str = "give up after this long (default 10)") -> None:
    p.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                   help=f"the service's gRPC address (default {DEFAULT_ADDRESS})")
    p.add_argument(f"--{role}-key", metavar="FILE",
                   help=f"file holding {ROLE_NAMES[role]} API key (default ${key_env(role)}, else {demo_key(role)} "
                        "when it exists)")
    p.add_argument("--ca", metavar="FILE", help="CA certificate of the service's TLS certificate (TLS; without "
                                                "it, plaintext, which the service allows only on loopback)")
    p.add_argument("--cert", metavar="FILE", help=f"{ROLE_NAMES[role]}'s client certificate for mTLS (with --key)")
    p.add_argument("--key", metavar="FILE", help="private key of --cert")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help=timeout_help)


def role_key(args: argparse.Namespace, role: str = "admin") -> str | None:
    """The role's key text (--<role>-key, $AECL_<ROLE>_KEY_FILE, or the demo
    file when it exists), or None (a client certificate may do)."""
    from enforcer.errors import AeclError

    chosen = getattr(args, f"{role}_key") or os.environ.get(key_env(role))
    default = demo_key(role)
    path = Path(chosen) if chosen else (default if default.is_file() else None)
    if path is None:
        return None
    try:
        key = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise AeclError(f"--{role}-key {path}: {getattr(e, 'strerror', None) or e}") from None
    if not key:
        raise AeclError(f"--{role}-key {path}: the file is empty")
    return key


def admin_key(args: argparse.Namespace) -> str | None:
    return role_key(args, "admin")


def channel(args: argparse.Namespace):
    """A ready channel to the service, or AeclError when nothing answers."""
    import grpc

    from enforcer.errors import AeclError

    def read(name: str) -> bytes | None:
        value = getattr(args, name)
        if value is None:
            return None
        try:
            return Path(value).read_bytes()
        except OSError as e:
            raise AeclError(f"--{name} {value}: {e.strerror}") from None

    if (args.cert is None) != (args.key is None):
        raise AeclError("--cert and --key go together (the client certificate and its private key)")
    if args.ca is not None or args.cert is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca"), private_key=read("key"),
                                             certificate_chain=read("cert"))
        ch = grpc.secure_channel(args.address, creds)
    else:
        ch = grpc.insecure_channel(args.address)
    try:
        grpc.channel_ready_future(ch).result(timeout=args.timeout)
    except grpc.FutureTimeoutError:
        ch.close()
        raise AeclError(f"nothing answers at {args.address} within {args.timeout:g}s: is `aecl serve` running "
                        "there? (set the address with --address; with TLS, pass --ca)") from None
    return ch


def call_admin(args: argparse.Namespace, method: str, request):
    """One AdminService call, authenticated as the administrator."""
    import grpc

    from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
    from enforcer.errors import AeclError

    key = admin_key(args)
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    ch = channel(args)
    try:
        return getattr(pb_grpc.AdminServiceStub(ch), method)(request, timeout=args.timeout, metadata=metadata)
    except grpc.RpcError as e:
        hint = ""
        if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            hint = f" (an administrator's key: --admin-key FILE or ${ADMIN_KEY_ENV})"
        raise AeclError(f"{args.address}: {method} failed: {e.code().name}: {e.details()}{hint}") from None
    finally:
        ch.close()
