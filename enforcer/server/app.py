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
from enforcer.config import ServiceConfig, transport_problem
from enforcer.errors import AeclError, ConfigError
from enforcer.connectors.proxy import load_connectors
from enforcer.identity.authenticate import Authenticator
from enforcer.identity.tokens import TokenIssuer, TokenVerifier, load_token_key
from enforcer.server.auth import AuthInterceptor
from enforcer.metrics import Metrics
from enforcer.pipeline.pipeline import Pipeline
from enforcer.policy.engine import PolicyEngine
from enforcer.policy.holder import PolicyHolder
from enforcer.policy.reload import PolicyReloader, compile_active, watched_paths
from enforcer.sandbox.profile import DEFAULT_PROFILE, load_profile
from enforcer.sandbox.runner import BwrapRunner
from enforcer.server.health import Health
from enforcer.server.approvals_service import ApprovalService
from enforcer.server.service import AdminService, EnforcerService
from enforcer.server.wire import add_enforcer_service
from enforcer.state.sqlite import SqliteStateStore

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EnforcerService"].full_name
ADMIN_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
APPROVAL_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ApprovalService"].full_name


@dataclass
class Components:
    policy: PolicyHolder
    pipeline: Pipeline
    audit: AuditLog
    store: SqliteStateStore
    sandbox: BwrapRunner
    reloader: PolicyReloader
    authenticator: Authenticator

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
    ident = config.identity
    token_key = load_token_key(ident.token_signing_key)
    if token_key.public_key().public_bytes_raw() == signing_key.public_key().public_bytes_raw():
        raise ConfigError("identity.token_signing_key: is the audit signing key; task tokens need a key of "
                          "their own (`aecl credentials init` makes one)")
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
        tokens=TokenIssuer(token_key, ident.service_id), service_id=ident.service_id,
        connectors=load_connectors(config.connectors), idempotency_retention_s=config.idempotency.retention_s,
        rollback=config.rollback,
    )
    verifier = TokenVerifier(token_key.public_key(), ident.service_id, cache_size=ident.token_cache_size)
    authenticator = Authenticator(policy, verifier, pipeline.revocations)
    reloader = PolicyReloader(
        policy, config, load_config or (lambda: config), pipeline.log_reload,
        run_tests=config.policy.reload.run_tests, config_path=config_path,
    )
    if active.shadow_all or active.shadow_agents:
        log.warning("SHADOW MODE: decisions for %s are logged but NOT enforced",
                    "every agent" if active.shadow_all else sorted(active.shadow_agents))
    return Components(policy, pipeline, audit, store, sandbox, reloader, authenticator)


class McpRunning:
    """The MCP upstreams and front end of a running service."""

    def __init__(self, upstreams, front) -> None:
        self.upstreams = upstreams
        self.front = front

    async def stop_front(self) -> None:
        if self.front is not None:
            await self.front.stop()
            self.front = None

    async def stop(self) -> None:
        await self.stop_front()
        if self.upstreams is not None:
            await self.upstreams.stop()
            self.upstreams = None


async def start_mcp(config: ServiceConfig, components: Components, console_url: str | None) -> McpRunning:
    """The upstream MCP servers (each in its sandbox) and, with mcp.listen,
    the front end; an upstream that does not start is a ConfigError."""
    from enforcer.connectors.proxy import load_connectors as connectors_of
    from enforcer.mcp.frontend import McpFrontEnd
    from enforcer.mcp.upstream import Upstreams

    upstreams = Upstreams(config.mcp.upstreams, connectors=connectors_of(config.connectors),
                          bwrap=config.sandbox.bwrap)
    running = McpRunning(upstreams, None)
    try:
        await upstreams.start()
    except AeclError as e:
        await running.stop()
        raise ConfigError(f"mcp.upstreams: {e}") from None
    components.pipeline.run_approved.mcp = upstreams
    if config.mcp.listen is not None:
        front = McpFrontEnd(config, components.pipeline, components.authenticator, upstreams,
                            console_url=config.console.public_url or console_url)
        running.front = front
        try:
            await front.start(config.mcp.listen)
        except (AeclError, OSError) as e:
            await running.stop()
            raise ConfigError(f"mcp.listen: {e}") from None
        log.info("MCP front end on %s", front.url)
    return running


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
    """Authentication (enforcer.server.auth) is always the first
    interceptor; `interceptors` run after it. TLS when the config has it,
    plaintext only on loopback when it says so. Returns the server and the
    port it bound (the one asked for, or the one chosen for port 0)."""
    problem = transport_problem(config.listen, config.tls, config.plaintext)
    if problem is not None:  # again here: a --listen override skips the config's validation
        raise ConfigError(problem)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(components.authenticator, components.pipeline), *interceptors],
        options=[
            ("grpc.max_receive_message_length", config.limits.max_message_bytes),
            ("grpc.max_send_message_length", config.limits.max_message_bytes),
        ],
    )
    enforcer_service = EnforcerService(components.pipeline, config.limits)
    # AECL decodes the agents' requests itself, so an undecodable one is logged (wire.py).
    add_enforcer_service(server, enforcer_service, enforcer_service.undecodable)
    pb_grpc.add_AdminServiceServicer_to_server(
        AdminService(components.policy, components.reloader, components.pipeline), server)
    pb_grpc.add_ApprovalServiceServicer_to_server(ApprovalService(components.pipeline), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, APPROVAL_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        if config.tls is not None:
            port = server.add_secure_port(config.listen, server_credentials(config.tls))
        else:
            log.warning("PLAINTEXT gRPC on %s (plaintext: true): for local development only; configure tls "
                        "before anything but this host connects", config.listen)
            port = server.add_insecure_port(config.listen)
    except RuntimeError:  # grpcio reports a failed bind this way
        port = 0
    if port == 0:
        raise ConfigError(f"listen: cannot listen on {config.listen} (in use, or not an address of this host): "
                          f"{change_hint('listen', '--listen', config_path)}")
    server._aecl_health = health_servicer  # type: ignore[attr-defined]
    return server, port


def server_credentials(tls) -> grpc.ServerCredentials:
    """TLS from the config's files; mTLS (client certificates checked
    against client_ca) when it has one."""
    try:
        key, cert = tls.key.read_bytes(), tls.cert.read_bytes()
        ca = tls.client_ca.read_bytes() if tls.client_ca is not None else None
    except OSError as e:
        raise ConfigError(f"tls: cannot read {e.filename}: {e.strerror}") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def transport_name(config: ServiceConfig) -> str:
    if config.tls is None:
        return "plaintext, loopback only"
    return "TLS" if config.tls.client_ca is None else "mTLS"


def config_digest(config: ServiceConfig) -> str:
    """sha256 of the validated configuration, as the service runs it."""
    return "sha256:" + hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def banner(config: ServiceConfig, address: str, metrics_url: str | None, components: Components,
           config_path: Path | None, console_url: str | None = None, mcp_url: str | None = None) -> str:
    """The start-up banner: every address as bound, and where the log is."""
    pub = config.audit.signing_key.with_name(PUBLIC_NAME)
    lines = [
        f"AECL serving on {address} (gRPC, {transport_name(config)})",
        f"  config:  {config_path if config_path is not None else '(built in code)'}",
        f"  engine:  {components.engine.name}, policy {components.engine.revision}",
        f"  audit:   {config.audit.path}",
        f"  metrics: {metrics_url or 'off'}",
        f"  console: {console_url + ' (approvers)' if console_url else 'off'}",
        f"  mcp:     {mcp_url + ' (agents, MCP)' if mcp_url else 'off'}",
    ]
    if pub.is_file():
        lines.append(f"  verify:  aecl verify --log {config.audit.path} --pubkey {pub}")
    if config.identity.credentials_dir is not None:
        lines.append(f"  keys:    {config.identity.credentials_dir} (API key hashes; `aecl credentials --help`)")
    return "\n".join(lines)


async def serve(
    config: ServiceConfig, *, ready: asyncio.Event | None = None,
    load_config: Callable[[], ServiceConfig] | None = None, config_path: Path | None = None,
) -> None:
    problem = transport_problem(config.listen, config.tls, config.plaintext)
    if problem is not None:  # before anything opens: a --listen override skips the config's validation
        raise ConfigError(problem)
    components = build_components(config, load_config, config_path)
    await components.pipeline.load_revocations()
    console = notifier = mcp = None
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
        if config.console.listen is not None:
            from enforcer.console.server import ConsoleServer  # the web front end: only when configured
            console = ConsoleServer(config, components.pipeline, components.authenticator)
            await console.start()
        if config.mcp.upstreams or config.mcp.listen is not None:
            mcp = await start_mcp(config, components, console.url if console is not None else None)
        if config.approvals.webhooks:
            from enforcer.notify.webhook import WebhookNotifier
            notifier = WebhookNotifier(
                config.approvals.webhooks, components.pipeline.journal,
                console_url=config.console.public_url or (console.url if console is not None else None),
                policy_revision=lambda: components.policy.current.revision,
                clock=lambda: components.pipeline.clock(),  # the clock expiry is judged on
                principal=components.pipeline.service_principal)
            components.pipeline.approvals.on_created.append(notifier.notify)
    except ConfigError:
        if console is not None:
            await console.stop()
        if mcp is not None:
            await mcp.stop()
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
    print(banner(config, f"{host}:{port}", metrics_url, components, config_path,
                 console.url if console is not None else None,
                 mcp.front.url if mcp is not None and mcp.front is not None else None), flush=True)
    # A restart leaves a trace: what started, with which configuration and policy.
    digest = config_digest(config)
    await components.pipeline.log_service("start", config_digest=digest, listen=f"{host}:{port}")
    # Approvals outlive restarts: a call cut off mid-run is marked (outcome
    # unknown), approved ones not yet started run once; then expiry is swept.
    await components.pipeline.ledger.recover(revision=components.policy.current.revision)
    await components.pipeline.approvals.recover()
    sweeper = asyncio.get_running_loop().create_task(
        components.pipeline.approvals.sweep(config.approvals.sweep_interval_s), name="aecl-approval-sweeper")
    pruner = asyncio.get_running_loop().create_task(components.pipeline.ledger.prune(3600),
                                                    name="aecl-idempotency-pruner")
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
        sweeper.cancel()
        pruner.cancel()
        log.info("shutting down")
        await health_servicer.enter_graceful_shutdown()
        if console is not None:
            await console.stop()
        if notifier is not None:
            await notifier.close()
        if mcp is not None:
            await mcp.stop_front()
        # Kill running sandboxes first: their calls then finish as logged
        # failures (cause: shutdown) while the audit log is still open,
        # within the grace period.
        components.pipeline.shutting_down = True
        components.sandbox.kill_all()
        await server.stop(grace=5)
        await components.pipeline.approvals.drain()
        if mcp is not None:
            await mcp.stop()
        try:
            await components.pipeline.log_service("stop", config_digest=digest, listen=f"{host}:{port}")
        except AeclError as e:
            log.critical("the service's stop could not be logged: %s", e)
        components.close()
