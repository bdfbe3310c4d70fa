"""How the operator CLIs reach a running service: the address, TLS, and the
administrator's credential. One set of options for `aecl policy
status/reload` and `aecl admin ...`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_ADDRESS = "127.0.0.1:50051"
ADMIN_KEY_ENV = "AECL_ADMIN_KEY_FILE"
# Where `make run` leaves the demo administrator's key.
DEMO_ADMIN_KEY = Path("var/credentials/admin.key")


def add_connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                   help=f"the service's gRPC address (default {DEFAULT_ADDRESS})")
    p.add_argument("--admin-key", metavar="FILE",
                   help=f"file holding an administrator API key (default ${ADMIN_KEY_ENV}, else {DEMO_ADMIN_KEY} "
                        "when it exists)")
    p.add_argument("--ca", metavar="FILE", help="CA certificate of the service's TLS certificate (TLS; without "
                                                "it, plaintext, which the service allows only on loopback)")
    p.add_argument("--cert", metavar="FILE", help="client certificate for mTLS (with --key)")
    p.add_argument("--key", metavar="FILE", help="private key of --cert")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up after this long (default 10)")


def admin_key(args: argparse.Namespace) -> str | None:
    """The administrator's key text, or None (a client certificate may do)."""
    from enforcer.errors import AeclError

    chosen = args.admin_key or os.environ.get(ADMIN_KEY_ENV)
    path = Path(chosen) if chosen else (DEMO_ADMIN_KEY if DEMO_ADMIN_KEY.is_file() else None)
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as e:
        raise AeclError(f"--admin-key {path}: {e.strerror}") from None


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
