"""Service configuration: strict pydantic models, validated once at startup.

Relative paths in a config file are resolved against the file's directory so
that a configuration folder can be moved as a unit. Which fields are paths is
declared on the field itself: every one is typed ConfigPath, and load_config
passes the file's directory as the validation context. A model validated
without that context (built in code, a test) keeps its paths as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from enforcer._yaml import describe_validation_error, read_document
from enforcer.errors import ConfigError
from enforcer.identity.models import HumanPrincipal, PrincipalName

PositiveFloat = Annotated[float, Field(gt=0)]
# The validation context key load_config sets: the config file's directory.
BASE_DIR = "base"


def _against_base(path: Path, info: ValidationInfo) -> Path:
    base = info.context.get(BASE_DIR) if isinstance(info.context, dict) else None
    return path if base is None else (Path(base) / path).resolve()


# A path in a config file: relative to the file's directory when loaded from one.
ConfigPath = Annotated[Path, AfterValidator(_against_base)]

# Where the CLI looks when --config is not given: the demo configuration.
DEFAULT_CONFIG = "examples/aecl.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskModel(_Strict):
    """Blast-radius weights. Data, not code: Rego reads them from data.aecl.config.risk."""

    amount_threshold: float = 50_000
    weights: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: {
            "large_amount": 0.5,
            "irreversible": 0.3,
            "affects_production": 0.4,
            "bulk_operation": 0.3,
            "untrusted_input": 0.2,
        }
    )

    @model_validator(mode="after")
    def _known_flags(self) -> RiskModel:
        unknown = set(self.weights) - RISK_FLAGS
        if unknown:
            raise ValueError(f"unknown risk flags {sorted(unknown)}; known: {sorted(RISK_FLAGS)}")
        return self


RISK_FLAGS = frozenset(
    {"large_amount", "irreversible", "affects_production", "bulk_operation", "untrusted_input"}
)


class HitlConfig(_Strict):
    """Which calls wait for a human and for how long (the seed's HITL_POLICY).
    Data, not code: Rego reads it from data.aecl.config.hitl."""

    # action -> approval expiry in seconds; the action always requires approval.
    routes: dict[str, Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: {
            "transfer_funds": 3600,
            "bulk_data_export": 4 * 3600,
            "deploy_to_production": 2 * 3600,
            "modify_iam_policy": 3600,
        }
    )
    # Any risk score above this escalates, whatever the agent's own threshold.
    risk_floor: float = Field(default=0.7, ge=0, le=1)
    risk_floor_ttl_seconds: int = Field(default=3600, gt=0)
    # Expiry of escalations by other rules (context rules, agent thresholds).
    default_ttl_seconds: int = Field(default=3600, gt=0)


class HistoryConfig(_Strict):
    """Rules on what a task already did (rego/aecl/history.rego), from the
    task's history of calls in the policy input. Data, not code: Rego reads
    it from data.aecl.config.history. Strict: a `true` or a "100" is
    refused, never read as a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # tool -> the most the tool's amounts (its registry amount_arg) may add
    # up to in one task: the earlier approved and escalated calls' amounts
    # plus this call's. Above it, the call is blocked.
    amount_caps: dict[str, Annotated[int | float, Field(ge=0)]] = {}
    # tool -> N: at most N calls of the tool on the same resource (its
    # registry resource_arg; a tool without one counts all its calls), blocked
    # ones aside, within window_seconds: the (N+1)th is blocked. At least 1
    # (to forbid a tool, leave it off the agent's allow list).
    max_repeats: dict[str, Annotated[int, Field(ge=1)]] = {}
    window_seconds: int = Field(default=3600, gt=0)


class OpaConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8181, ge=1, le=65535)
    timeout_s: PositiveFloat = 0.5
    # Start and supervise a local `opa run --server` instead of using a running sidecar.
    supervise: bool = False
    binary: str | None = None
    # An OPA bundle (`aecl policy build`) that the supervised OPA loads through
    # its bundle plugin, or that the external sidecar was started with. When
    # set, nothing is pushed over REST: every decision is checked to come from
    # a bundle whose revision is the service's own, or it is blocked.
    bundle: ConfigPath | None = None


class ReloadConfig(_Strict):
    """Hot reload of policy, manifests and registry (also on SIGHUP and the
    admin RPC). A candidate must compile and pass its own Rego tests."""

    watch: bool = True
    interval_s: PositiveFloat = 1.0
    run_tests: bool = True


class PolicyConfig(_Strict):
    # embedded: the Rego compiled by OPA to WebAssembly, run in-process by
    # wasmtime (the shipped policy comes compiled; other Rego needs the opa
    # binary to compile). opa: an OPA sidecar (policy.opa) over its REST API.
    engine: Literal["embedded", "opa"] = "embedded"
    rego_dir: ConfigPath
    risk: RiskModel = RiskModel()
    hitl: HitlConfig = HitlConfig()
    history: HistoryConfig = HistoryConfig()
    # shadow: decisions are computed and logged with shadow=true, but calls
    # proceed as if approved. For rolling out a policy; loud in the logs.
    mode: Literal["enforce", "shadow"] = "enforce"
    # Agents in shadow mode while the rest are enforced.
    shadow_agents: list[str] = []
    reload: ReloadConfig = ReloadConfig()
    opa: OpaConfig = OpaConfig()


class AuditConfig(_Strict):
    path: ConfigPath
    signing_key: ConfigPath
    # The log's name in its signed checkpoints (default aecl/audit/<key id>).
    origin: str | None = None
    # Where the latest signed checkpoint is written for shipping elsewhere
    # (default: the log's path + ".checkpoint").
    checkpoint_path: ConfigPath | None = None
    checkpoint_every: int = Field(default=1000, gt=0)
    checkpoint_interval_s: PositiveFloat = 10.0
    # After a key rotation: the outgoing key, to sign the hand-over to signing_key.
    previous_signing_key: ConfigPath | None = None
    # Seal the active file into <path>.seg-<first seq> at this size (off when unset).
    max_segment_bytes: int | None = Field(default=256 << 20, gt=0)


class StateConfig(_Strict):
    sqlite_path: ConfigPath


class SandboxConfig(_Strict):
    bwrap: str = "/usr/bin/bwrap"
    # Isolation profile; the shipped enforcer/sandbox/profiles/default.yaml when unset.
    profile: ConfigPath | None = None
    call_timeout_s: PositiveFloat = 30
    task_timeout_s: PositiveFloat = 20 * 60
    max_output_bytes: int = Field(default=1 << 20, gt=0)
    # Service-wide cap on sandboxes alive at once; further calls wait for a
    # slot in arrival order, and once max_waiting calls wait, a call fails at
    # once with sandbox_busy (0: never wait).
    max_concurrent: int = Field(default=8, gt=0)
    max_waiting: int = Field(default=64, ge=0)
    # Limits on the aecl/ parent cgroup holding every sandbox: memory and
    # processes of all sandboxes together. Unset by default: the service
    # writes nothing there (an operator's own limit on aecl/ or the enclosing
    # unit's, e.g. systemd MemoryMax=/TasksMax=, stays in force), since a
    # fitting total depends on the host, and max_concurrent x the profile's
    # per-sandbox memory_bytes/pids already bounds the sum. Applied like the
    # profile's cgroup limits: where the machine refuses, logged at startup,
    # or startup fails under `cgroups: required`.
    total_memory_bytes: Annotated[int, Field(gt=0)] | None = None
    total_pids: Annotated[int, Field(gt=0)] | None = None


class LimitsConfig(_Strict):
    """Bounds on untrusted request content, checked before anything else."""

    max_args_bytes: int = Field(default=64 << 10, gt=0)
    max_args_depth: int = Field(default=16, gt=0)
    max_triggering_input_bytes: int = Field(default=16 << 10, gt=0)
    max_message_bytes: int = Field(default=4 << 20, gt=0)


class MetricsConfig(_Strict):
    # host:port of the Prometheus endpoint (/metrics); off when unset.
    listen: str | None = None


class IdentityConfig(_Strict):
    """Who may call: agents (their manifests), approvers and administrators,
    and the key that signs task tokens."""

    # This service's name: the issuer and audience of its task tokens. A
    # token minted for another service id is refused.
    service_id: PrincipalName = "aecl"
    # Ed25519 private key (PEM, mode 0600) that signs task tokens; never the
    # audit key. `aecl credentials init` makes one.
    token_signing_key: ConfigPath
    # Where `aecl credentials` keeps key hashes (hashes/<kind>.<id>.yaml),
    # outside git; read at start-up and on every reload.
    credentials_dir: ConfigPath | None = None
    approvers: list[HumanPrincipal] = []
    admins: list[HumanPrincipal] = []
    # Verified tokens remembered (by their exact text) so that a repeated
    # token costs a lookup, not a signature check; times and revocation are
    # checked on every call.
    token_cache_size: int = Field(default=10_000, ge=0)

    @model_validator(mode="after")
    def _one_id_per_role(self) -> IdentityConfig:
        for role in ("approvers", "admins"):
            ids = [p.id for p in getattr(self, role)]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{role}: {', '.join(dupes)} listed more than once")
        return self


class TlsConfig(_Strict):
    """TLS on the gRPC port; mTLS when client_ca is set."""

    cert: ConfigPath
    key: ConfigPath
    # mTLS: every client must present a certificate signed by this CA. A
    # verified certificate whose identity a manifest or the config names
    # proves that principal without an API key; API keys still work on top.
    # (Required, not optional: grpcio cannot ask for a certificate without
    # demanding one, so an "optional" certificate would never be seen.)
    client_ca: ConfigPath | None = None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def transport_problem(listen: str, tls: TlsConfig | None, plaintext: bool) -> str | None:
    """Why this listen/transport combination is refused, or None. Plaintext
    only on loopback, only when asked for; checked at load and again when
    the server binds (a --listen override skips the model's validation)."""
    host = listen.rpartition(":")[0]
    if tls is not None and plaintext:
        return "plaintext: cannot be true when tls is configured"
    if tls is None and not plaintext:
        return ("tls: not configured; set tls.cert and tls.key (`aecl certs dev --out DIR` makes development "
                "certificates), or `plaintext: true` on a loopback listen address for local development")
    if plaintext and not (host in LOOPBACK_HOSTS or host.startswith("127.")):
        return (f"plaintext: allowed only on a loopback address, not {listen!r}; configure tls to listen "
                "beyond this host")
    return None


class ConnectorRoute(_Strict):
    """Requests a connector lets through: these methods under this path prefix."""

    methods: list[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]] = Field(min_length=1)
    path_prefix: str = Field(pattern=r"^/")


class ConnectorCredential(_Strict):
    """The secret the connector injects upstream: from a file or an environment
    variable of the service, never from the agent. Sent as `header: scheme value`."""

    file: ConfigPath | None = None
    env: str | None = None
    header: str = "Authorization"
    scheme: str = "Bearer"

    @model_validator(mode="after")
    def _one_source(self) -> ConnectorCredential:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        return self


class ConnectorConfig(_Strict):
    """An approved, scoped way out of the sandbox to one upstream."""

    base_url: str = Field(pattern=r"^https?://[^/?#]+(/.*)?$")
    credential: ConnectorCredential | None = None
    allow: list[ConnectorRoute] = Field(min_length=1)
    # The manifest credential_scope entry a task needs to use this connector
    # (e.g. payments:initiate); checked by the policy before any sandbox starts.
    scope: str = Field(min_length=1)
    timeout_s: PositiveFloat = 10.0
    max_body_bytes: int = Field(default=1 << 20, gt=0)


class WebhookConfig(_Strict):
    """Where an escalation is announced: a JSON POST with the approval's full
    context and links to its page in the console, signed with HMAC-SHA256
    (header X-AECL-Signature: `t=<unix time>,v1=<hex>` over
    "<t>.<body>"), retried with exponential backoff; each attempt is a
    `notification` audit entry."""

    url: str = Field(pattern=r"^https?://[^/?#]+(/.*)?$")
    # The HMAC key: a file of the operator's (0600), its text is the key.
    secret_file: ConfigPath
    timeout_s: PositiveFloat = 5.0
    max_attempts: int = Field(default=5, ge=1, le=20)
    # First retry after this long; each later one waits twice as long.
    backoff_s: PositiveFloat = 1.0


class ApprovalsConfig(_Strict):
    webhooks: list[WebhookConfig] = []
    # How often pending approvals past their expiry are marked expired
    # (expiry is also checked when a human resolves and when the call starts).
    sweep_interval_s: PositiveFloat = 1.0


class IdempotencyConfig(_Strict):
    # How long a key's first result is kept after its task ends (Stripe keeps 24 h).
    retention_s: PositiveFloat = 24 * 3600


class RollbackConfig(_Strict):
    # A failing compensation is tried this many times, waiting backoff_s,
    # then twice as long each time, before it is parked (rollback_failed).
    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: PositiveFloat = 0.5


class ConsoleConfig(_Strict):
    """The approver console (HTML over HTTP): served when `listen` is set.
    Under the service's `tls` it uses the same certificate (and its session
    cookie is Secure); without TLS only on a loopback address."""

    listen: str | None = None
    # The console's address as approvers reach it, for links in
    # notifications; default http(s)://<listen>.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/.*)?$")
    session_ttl_s: PositiveFloat = 8 * 3600


class McpBind(_Strict):
    host: ConfigPath   # relative to the config file, like every path
    path: str = Field(pattern=r"^/")


class McpStdioUpstream(_Strict):
    """An MCP server AECL launches inside its own sandbox and talks to over
    stdio, for the service's life (restarted if it dies): no network,
    read-only system, the workspace the only writable place."""

    # argv inside the sandbox, e.g. [/usr/bin/node, /opt/mcp/node_modules/.../index.js, /workspace]
    command: list[str] = Field(min_length=1)
    # host directory bound read-write at /workspace (the server's files); none: no workspace
    workspace: ConfigPath | None = None
    # bound read-only into the sandbox (the server's code, e.g. its node_modules)
    ro_binds: list[McpBind] = []
    env: dict[str, str] = {}
    call_timeout_s: PositiveFloat = 30.0
    memory_bytes: int = Field(default=512 << 20, gt=0)


class McpHttpUpstream(_Strict):
    """An MCP server reached over Streamable HTTP through a connector (its
    base_url and credential, injected by AECL; never the client's)."""

    connector: PrincipalName
    path: str = Field(default="/mcp", pattern=r"^/")
    call_timeout_s: PositiveFloat = 30.0


class McpUpstreamConfig(_Strict):
    stdio: McpStdioUpstream | None = None
    http: McpHttpUpstream | None = None

    @model_validator(mode="after")
    def _one(self) -> McpUpstreamConfig:
        if (self.stdio is None) == (self.http is None):
            raise ValueError("an upstream is exactly one of stdio: or http:")
        return self


class McpConfig(_Strict):
    """The MCP front end (`aecl mcp`, enforcer/mcp): served over Streamable
    HTTP at http://<listen>/mcp when listen is set, in front of `upstreams`."""

    listen: str | None = None
    upstreams: dict[PrincipalName, McpUpstreamConfig] = {}
    # The AEAD key sealing requestState (32+ bytes of a 0600 file; `make run` makes one).
    state_key_file: ConfigPath | None = None
    # The declared goal of the task an agent's MCP calls belong to (one per
    # agent and front end, renewed when it ends; its declared actions are
    # the MCP tools the agent may call).
    task_goal: str = "MCP session"


class ServiceConfig(_Strict):
    listen: str = "127.0.0.1:50051"
    agents_dir: ConfigPath
    tool_registry: ConfigPath
    policy: PolicyConfig
    audit: AuditConfig
    state: StateConfig
    identity: IdentityConfig
    tls: TlsConfig | None = None
    # Serve without TLS: development on a loopback address only (warned at start-up).
    plaintext: bool = False
    sandbox: SandboxConfig = SandboxConfig()
    limits: LimitsConfig = LimitsConfig()
    metrics: MetricsConfig = MetricsConfig()
    # name -> connector; a tool's registry entry names the connectors it may use.
    connectors: dict[PrincipalName, ConnectorConfig] = {}
    approvals: ApprovalsConfig = ApprovalsConfig()
    console: ConsoleConfig = ConsoleConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()
    rollback: RollbackConfig = RollbackConfig()
    mcp: McpConfig = McpConfig()

    @model_validator(mode="after")
    def _transport(self) -> ServiceConfig:
        problem = transport_problem(self.listen, self.tls, self.plaintext)
        if problem is None and self.console.listen is not None:
            problem = transport_problem(self.console.listen, self.tls, self.plaintext)
            if problem is not None:
                problem = f"console.listen: {problem}"
        if problem is None and self.mcp.listen is not None:
            host = self.mcp.listen.rpartition(":")[0]
            if not (host in LOOPBACK_HOSTS or host.startswith("127.")):
                # Agents' API keys travel as bearers: the MCP port is plain HTTP, so loopback only.
                problem = (f"mcp.listen: the MCP front end is served over plain HTTP, so only on a loopback "
                           f"address, not {self.mcp.listen!r} (put a TLS-terminating proxy on this host in front "
                           "to reach it from elsewhere)")
        if problem is not None:
            raise ValueError(problem)
        return self


def load_config(path: Path) -> ServiceConfig:
    raw = read_document(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return ServiceConfig.model_validate(raw, context={BASE_DIR: path.parent.resolve()})
    except ValidationError as e:
        raise describe_validation_error(path, e) from e
