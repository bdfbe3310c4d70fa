"""The baseline: a bare grpc.aio server whose one method returns its request.
Same runtime, same process model as `aecl serve`, and no work at all."""

import asyncio
import sys

import grpc


async def main(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def _echo(req: bytes, context) -> bytes:
    return req


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
