"""Assembling the service from its configuration, and serving it."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.audit.keys import load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.config import ServiceConfig
from enforcer.manifests import load_agents, load_registry
from enforcer.pipeline.pipeline import Pipeline
from enforcer.policy.engine import PolicyEngine, create_engine
from enforcer.policy.policyset import build_policy_set
from enforcer.sandbox.profile import load_profile
from enforcer.sandbox.runner import BwrapRunner
from enforcer.server.service import EnforcerService
from enforcer.state.sqlite import SqliteStateStore

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EnforcerService"].full_name
DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "sandbox" / "profiles" / "default.yaml"


@dataclass
class Components:
    pipeline: Pipeline
    engine: PolicyEngine
    audit: AuditLog
    store: SqliteStateStore
    sandbox: BwrapRunner

    def close(self) -> None:
        self.sandbox.kill_all()
        self.engine.close()
        self.audit.close()
        self.store.close()


def build_components(config: ServiceConfig) -> Components:
    """Load and validate everything up front: a bad manifest, registry, policy
    or key stops startup with an error naming the file."""
    agents = load_agents(config.agents_dir)
    registry = load_registry(config.tool_registry)
    policy_set = build_policy_set(config.policy.rego_dir, agents, config.policy)
    profile = load_profile(config.sandbox.profile or DEFAULT_PROFILE)
    sandbox = BwrapRunner(config.sandbox.bwrap, profile, config.sandbox.max_output_bytes)
    signing_key = load_signing_key(config.audit.signing_key)
    engine = create_engine(policy_set, config.policy)
    audit = AuditLog(config.audit.path, signing_key)
    store = SqliteStateStore(config.state.sqlite_path)
    pipeline = Pipeline(
        registry=registry, engine=engine, audit=audit, store=store, sandbox=sandbox,
        sandbox_config=config.sandbox, limits=config.limits,
    )
    return Components(pipeline, engine, audit, store, sandbox)


def create_server(
    components: Components,
    config: ServiceConfig,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int]:
    """The interceptor list is the seam for authentication (task tokens,
    mTLS identity) without touching the service."""
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", config.limits.max_message_bytes),
            ("grpc.max_send_message_length", config.limits.max_message_bytes),
        ],
    )
    pb_grpc.add_EnforcerServiceServicer_to_server(EnforcerService(components.pipeline, config.limits), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    server._aecl_health = health_servicer  # type: ignore[attr-defined]
    return server, port


async def serve(config: ServiceConfig, *, ready: asyncio.Event | None = None) -> None:
    components = build_components(config)
    server, port = create_server(components, config)
    await server.start()
    health_servicer = server._aecl_health  # type: ignore[attr-defined]
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    host = config.listen.rsplit(":", 1)[0]
    log.info(
        "AECL serving on %s:%d (engine %s, policy %s, audit %s)",
        host, port, components.engine.name, components.engine.revision, config.audit.path,
    )
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=5)
        components.close()
