"""Assembling the service from its configuration, and serving it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.audit.keys import PUBLIC_NAME, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.config import ServiceConfig
from enforcer.errors import AeclError, ConfigError
from enforcer.metrics import Metrics
from enforcer.pipeline.pipeline import Pipeline
from enforcer.policy.engine import PolicyEngine
from enforcer.policy.holder import PolicyHolder
from enforcer.policy.reload import PolicyReloader, compile_active, watched_paths
from enforcer.sandbox.profile import DEFAULT_PROFILE, load_profile
from enforcer.sandbox.runner import BwrapRunner
from enforcer.server.health import Health
from enforcer.server.service import AdminService, EnforcerService
from enforcer.server.wire import add_enforcer_service
from enforcer.state.sqlite import SqliteStateStore

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EnforcerService"].full_name
ADMIN_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdminService"].full_name


@dataclass
class Components:
    policy: PolicyHolder
    pipeline: Pipeline
    audit: AuditLog
    store: SqliteStateStore
    sandbox: BwrapRunner
    reloader: PolicyReloader

    @property
    def engine(self) -> PolicyEngine:
        return self.policy.current.engine

    def close(self) -> None:
        self.sandbox.kill_all()
        self.reloader.close()
        self.engine.close()
        self.audit.close()
        self.store.close()


def build_components(
    config: ServiceConfig, load_config: Callable[[], ServiceConfig] | None = None,
    config_path: Path | None = None,
) -> Components:
    """Load and validate everything up front: a bad manifest, registry, policy
    or key stops startup with an error naming the file. `load_config`
    re-reads the configuration for hot reloads (default: this one, fixed)."""
    profile = load_profile(config.sandbox.profile or DEFAULT_PROFILE)
    sb = config.sandbox
    sandbox = BwrapRunner(sb.bwrap, profile, sb.max_output_bytes, max_concurrent=sb.max_concurrent,
                          max_waiting=sb.max_waiting, total_memory_bytes=sb.total_memory_bytes,
                          total_pids=sb.total_pids)
    signing_key = load_signing_key(config.audit.signing_key)
    policy = PolicyHolder(compile_active(config))
    active = policy.current
    audit = AuditLog(
        config.audit.path, signing_key, origin=config.audit.origin,
        checkpoint_path=config.audit.checkpoint_path, checkpoint_every=config.audit.checkpoint_every,
        checkpoint_interval_s=config.audit.checkpoint_interval_s,
        max_segment_bytes=config.audit.max_segment_bytes,
        previous_key=(load_signing_key(config.audit.previous_signing_key)
                      if config.audit.previous_signing_key else None),
    )
    store = SqliteStateStore(config.state.sqlite_path)
    metrics = Metrics(lambda: policy.current.agents)
    pipeline = Pipeline(
        policy=policy, audit=audit, store=store, sandbox=sandbox,
        sandbox_config=config.sandbox, limits=config.limits, metrics=metrics,
    )
    reloader = PolicyReloader(
        policy, config, load_config or (lambda: config), pipeline.log_reload,
        run_tests=config.policy.reload.run_tests, config_path=config_path,
    )
    if active.shadow_all or active.shadow_agents:
        log.warning("SHADOW MODE: decisions for %s are logged but NOT enforced",
                    "every agent" if active.shadow_all else sorted(active.shadow_agents))
    return Components(policy, pipeline, audit, store, sandbox, reloader)


def change_hint(key: str, flag: str, config_path: Path | None) -> str:
    """How an operator changes a listen address: the config key or the flag."""
    where = f"`{key}` in {config_path}" if config_path is not None else f"`{key}` in the config file"
    make = " (make run LISTEN=HOST:PORT)" if flag == "--listen" else ""
    return f"change {where}, or pass `aecl serve {flag} HOST:PORT`{make}"


def create_server(
    components: Components,
    config: ServiceConfig,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    *, config_path: Path | None = None,
) -> tuple[grpc.aio.Server, int]:
    """The interceptor list is the seam for authentication (task tokens,
    mTLS identity) without touching the service. Returns the server and the
    port it bound (the one asked for, or the one chosen for port 0)."""
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", config.limits.max_message_bytes),
            ("grpc.max_send_message_length", config.limits.max_message_bytes),
        ],
    )
    enforcer_service = EnforcerService(components.pipeline, config.limits)
    # AECL decodes the agents' requests itself, so an undecodable one is logged (wire.py).
    add_enforcer_service(server, enforcer_service, enforcer_service.undecodable)
    pb_grpc.add_AdminServiceServicer_to_server(AdminService(components.policy, components.reloader), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError:  # grpcio reports a failed bind this way
        port = 0
    if port == 0:
        raise ConfigError(f"listen: cannot listen on {config.listen} (in use, or not an address of this host): "
                          f"{change_hint('listen', '--listen', config_path)}")
    server._aecl_health = health_servicer  # type: ignore[attr-defined]
    return server, port


def config_digest(config: ServiceConfig) -> str:
    """sha256 of the validated configuration, as the service runs it."""
    return "sha256:" + hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def banner(config: ServiceConfig, address: str, metrics_url: str | None, components: Components,
           config_path: Path | None) -> str:
    """The start-up banner: every address as bound, and where the log is."""
    pub = config.audit.signing_key.with_name(PUBLIC_NAME)
    lines = [
        f"AECL serving on {address} (gRPC, plaintext)",
        f"  config:  {config_path if config_path is not None else '(built in code)'}",
        f"  engine:  {components.engine.name}, policy {components.engine.revision}",
        f"  audit:   {config.audit.path}",
        f"  metrics: {metrics_url or 'off'}",
    ]
    if pub.is_file():
        lines.append(f"  verify:  aecl verify --log {config.audit.path} --pubkey {pub}")
    return "\n".join(lines)


async def serve(
    config: ServiceConfig, *, ready: asyncio.Event | None = None,
    load_config: Callable[[], ServiceConfig] | None = None, config_path: Path | None = None,
) -> None:
    components = build_components(config, load_config, config_path)
    try:
        # Every listener is bound before any serves, so a busy port is one
        # clear error and nothing half-started is left behind.
        metrics_url = None
        if config.metrics.listen and components.pipeline.metrics is not None:
            try:
                mport = components.pipeline.metrics.serve(config.metrics.listen)
            except (OSError, ValueError) as e:
                raise ConfigError(f"metrics.listen: cannot serve metrics on {config.metrics.listen}: {e}: "
                                  f"{change_hint('metrics.listen', '--metrics-listen', config_path)} "
                                  "(or remove `metrics.listen`, or pass --metrics-listen off, "
                                  "to serve no metrics)") from None
            metrics_url = f"http://{config.metrics.listen.rpartition(':')[0] or '127.0.0.1'}:{mport}/metrics"
            log.info("Prometheus metrics on %s", metrics_url)
        server, port = create_server(components, config, config_path=config_path)
    except ConfigError:
        components.close()
        raise
    await server.start()
    health_servicer = server._aecl_health  # type: ignore[attr-defined]
    service_health = Health(health_servicer, ("", SERVICE_NAME))
    await service_health.start()
    metrics = components.pipeline.metrics

    def audit_failed(error) -> None:  # on the writer thread
        if metrics is not None:
            metrics.audit_failed.set(1)
        service_health.down("audit log", str(error))

    def audit_recovered() -> None:  # on the writer thread
        if metrics is not None:
            metrics.audit_failed.set(0)
        service_health.up("audit log")
    components.audit.on_failure = audit_failed
    components.audit.on_recover = audit_recovered
    components.store.on_health = lambda ok, why: (service_health.up("state store") if ok
                                                  else service_health.down("state store", why))
    host = config.listen.rsplit(":", 1)[0]
    log.info(
        "AECL serving on %s:%d (engine %s, policy %s, audit %s)",
        host, port, components.engine.name, components.engine.revision, config.audit.path,
    )
    # What is actually served, on stdout for the operator (make run shows it).
    print(banner(config, f"{host}:{port}", metrics_url, components, config_path), flush=True)
    # A restart leaves a trace: what started, with which configuration and policy.
    digest = config_digest(config)
    await components.pipeline.log_service("start", config_digest=digest, listen=f"{host}:{port}")
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    background: set[asyncio.Task] = set()

    def on_sighup() -> None:
        t = loop.create_task(components.reloader.reload("SIGHUP"))
        background.add(t)
        t.add_done_callback(background.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    watcher = None
    if config.policy.reload.watch:
        watcher = loop.create_task(components.reloader.watch(
            lambda: watched_paths(components.reloader.current_config()), config.policy.reload.interval_s))
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        log.info("shutting down")
        await health_servicer.enter_graceful_shutdown()
        # Kill running sandboxes first: their calls then finish as logged
        # failures (cause: shutdown) while the audit log is still open,
        # within the grace period.
        components.pipeline.shutting_down = True
        components.sandbox.kill_all()
        await server.stop(grace=5)
        try:
            await components.pipeline.log_service("stop", config_digest=digest, listen=f"{host}:{port}")
        except AeclError as e:
            log.critical("the service's stop could not be logged: %s", e)
        components.close()
