"""What authentication costs one call: the same do-nothing Decide handler
served twice by one grpc.aio process, once bare and once behind AECL's
AuthInterceptor (decode the request, verify the task token, bind agent and
task), which is what `aecl serve` puts in front of the pipeline. The
difference of their medians is the time authentication adds to a Decide.

    python bench/auth_echo_server.py CONFIG BARE_PORT AUTH_PORT
"""

import asyncio
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enforcer.config import load_config  # noqa: E402
from enforcer.identity.authenticate import Authenticator  # noqa: E402
from enforcer.identity.revocations import Revocations  # noqa: E402
from enforcer.identity.tokens import TokenVerifier, load_token_key  # noqa: E402
from enforcer.policy.holder import PolicyHolder  # noqa: E402
from enforcer.policy.reload import compile_active  # noqa: E402
from enforcer.server.auth import AuthInterceptor  # noqa: E402


async def _decide(req, context) -> bytes:
    return b""


def _handlers():
    return (grpc.method_handlers_generic_handler(
        "aecl.v1.EnforcerService", {"Decide": grpc.unary_unary_rpc_method_handler(_decide)}),)


async def main(config_path: str, bare_port: int, auth_port: int) -> None:
    config = load_config(Path(config_path))
    key = load_token_key(config.identity.token_signing_key)
    verifier = TokenVerifier(key.public_key(), config.identity.service_id,
                             cache_size=config.identity.token_cache_size)
    auth = Authenticator(PolicyHolder(compile_active(config)), verifier, Revocations())
    bare = grpc.aio.server()
    bare.add_generic_rpc_handlers(_handlers())
    bare.add_insecure_port(f"127.0.0.1:{bare_port}")
    # Refusals would be logged through the pipeline; the benchmark makes none.
    guarded = grpc.aio.server(interceptors=[AuthInterceptor(auth, pipeline=None)])  # type: ignore[arg-type]
    guarded.add_generic_rpc_handlers(_handlers())
    guarded.add_insecure_port(f"127.0.0.1:{auth_port}")
    await bare.start()
    await guarded.start()
    print("ready", flush=True)
    await bare.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
