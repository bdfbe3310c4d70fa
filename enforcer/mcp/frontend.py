"""The MCP front end: AECL as an MCP server (spec 2026-07-28, the official
Python SDK's low-level Server) in front of the upstream MCP servers the
config names (enforcer.mcp.upstream). One pipeline serves it, as it serves
gRPC and the console.

    tools/list   the registry's MCP tools the agent's manifest allows
    tools/call   identity -> admission -> policy (arguments, task history)
                 -> audit -> forwarded to the upstream -> audit

Answers to tools/call:
- approved: the upstream's result (content, structuredContent, isError),
  with `_meta["aecl/decision_id"]`;
- blocked: `isError: true`, the reason, the decision id in `_meta`;
- escalated: for a client that speaks 2026-07-28 and declared URL
  elicitation, `input_required` with a URL elicitation to the approval's
  console page and a requestState sealed by the SDK's RequestStateBoundary
  (AES-GCM; bound to method, tool, arguments, audience and the agent) that
  carries the approval id, the call's digest, the policy revision and the
  approval's expiry; single use on the server. The retry after approval
  returns the result of the one run the service made (the approval loop
  runs an approved call exactly once); before approval it is
  `input_required` again. Any other client gets `isError: true` naming the
  approval and how to retry (`_meta["aecl/approval_id"]` on the same call);
- an unknown tool or a call the SDK cannot parse: JSON-RPC -32602.

Identity: over HTTP, `Authorization: Bearer <the agent's API key>` on every
request (checked before the MCP app sees it; 401 otherwise, and an
`auth_refused` entry); over stdio, the agent and key given at launch. Each
agent's calls belong to one AECL task per front end (declared actions: the
MCP tools it may call), renewed when it ends. Duplicate protection is
AECL's idempotency (`_meta["aecl/idempotency_key"]`), never JSON-RPC ids:
a retried request has a new id. Every entry of a call carries its MCP
request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from enforcer.audit.records import Principal
from enforcer.config import ServiceConfig
from enforcer.errors import AeclError, ConfigError, NotAuthorised, Unauthenticated
from enforcer.identity.authenticate import Authenticator, Presented
from enforcer.manifests import ToolSpec
from enforcer.pipeline.payload import args_digest
from enforcer.pipeline.pipeline import Pipeline
from enforcer.pipeline.request import CallRequest, ExecuteResult, StartTaskRequest

log = logging.getLogger(__name__)

APPROVAL_KEY = "aecl_approval"
META_IDEMPOTENCY = "aecl/idempotency_key"
META_APPROVAL = "aecl/approval_id"
META_UNTRUSTED = "aecl/untrusted_input_source"
META_TRIGGER = "aecl/triggering_input"
# How long a retry after approval waits for the approved call's one run to end.
RUN_WAIT_S = 30.0
# requestState is resealed each round; AECL's own expiry (the approval's) is inside it.
STATE_TTL_S = 24 * 3600.0


@dataclass
class _Session:
    agent_id: str
    principal: Principal
    task_id: str = ""
    task_expires_at: float = 0.0


class McpFrontEnd:
    def __init__(self, config: ServiceConfig, pipeline: Pipeline, authenticator: Authenticator, upstreams: Any, *,
                 console_url: str | None = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.auth = authenticator
        self.upstreams = upstreams
        self.console_url = (console_url or "").rstrip("/")
        self._sessions: dict[str, _Session] = {}
        self._task_lock = asyncio.Lock()
        self._used_states: set[str] = set()  # consumed requestState nonces (single use)
        self._schemas: dict[str, dict[str, Any]] = {}
        self._annotations: dict[str, Any] = {}
        self.server = self._build_server()
        self._uvicorn = None
        self._serving: asyncio.Task | None = None
        self.url = ""

    # -- the tools ---------------------------------------------------------------------

    def mcp_tools(self) -> dict[str, ToolSpec]:
        return {n: t for n, t in self.pipeline.policy.current.registry.tools.items() if t.mcp is not None}

    async def load_upstream_tools(self) -> None:
        """Each registry MCP tool's schema from its upstream (unless the
        registry overrides it); upstream tools the registry does not name
        are hidden and refused, and listed in a warning."""
        named: dict[str, set[str]] = {}
        for name, spec in self.mcp_tools().items():
            assert spec.mcp is not None
            named.setdefault(spec.mcp.upstream, set()).add(spec.mcp.tool)
        unrun = sorted(set(named) - set(self.config.mcp.upstreams))
        if unrun:
            log.warning("the registry names MCP tools of upstream(s) %s, which this service does not run "
                        "(mcp.upstreams): those tools are hidden and refused", ", ".join(unrun))
        for upstream in sorted(self.config.mcp.upstreams):
            tools = {t.name: t for t in await self.upstreams.list_tools(upstream)}
            hidden = sorted(set(tools) - named.get(upstream, set()))
            if hidden:
                log.warning("MCP upstream %s: %d tool(s) the registry does not name are hidden and refused: %s",
                            upstream, len(hidden), ", ".join(hidden))
            for name, spec in self.mcp_tools().items():
                if spec.mcp is None or spec.mcp.upstream != upstream:
                    continue
                up = tools.get(spec.mcp.tool)
                if up is None:
                    raise ConfigError(f"tool_registry: tools.{name}.mcp: upstream {upstream!r} has no tool "
                                      f"{spec.mcp.tool!r} (it has {', '.join(sorted(tools)) or 'none'})")
                self._schemas[name] = spec.args_schema or dict(up.input_schema or {"type": "object"})
                self._annotations[name] = up.annotations

    def visible(self, agent_id: str) -> list[str]:
        from enforcer.server.service import visible_tools
        manifest = self.pipeline.policy.current.agents.get(agent_id)
        if manifest is None:
            return []
        return [name for name, spec, _ in visible_tools(manifest, self.pipeline.policy.current.registry)
                if spec.mcp is not None and name in self._schemas]

    # -- the SDK server ------------------------------------------------------------------

    def _build_server(self):
        from mcp.server import Server
        from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity

        server = Server("aecl", version=_version(), on_list_tools=self._list_tools, on_call_tool=self._call_tool,
                        get_tool_input_schema=lambda name: self._schemas.get(name))
        server.middleware.append(RequestStateBoundary(
            RequestStateSecurity(keys=[self._state_key()], ttl=STATE_TTL_S, bind_principal=self._principal_id),
            default_audience="aecl"))
        return server

    def _state_key(self) -> bytes:
        path = self.config.mcp.state_key_file
        if path is None:
            log.warning("mcp.state_key_file not set: requestState is sealed with a key of this process only, so "
                        "a client's retry after a restart is refused")
            return secrets.token_bytes(32)
        from enforcer.notify.secret import load_secret
        key = load_secret(path, "mcp.state_key_file")
        if len(key) < 32:
            raise ConfigError(f"{path}: mcp.state_key_file must hold at least 32 bytes")
        return key

    def _principal_id(self, ctx) -> str | None:
        s = self._session_of(ctx)
        return f"agent:{s.agent_id}" if s is not None else None

    def _session_of(self, ctx) -> _Session | None:
        request = getattr(ctx, "request", None)
        if request is not None:
            return getattr(request.state, "aecl_session", None)
        return self._sessions.get("stdio")

    async def _list_tools(self, ctx, params):
        from mcp.types import ListToolsResult, Tool
        s = self._require(ctx)
        return ListToolsResult(tools=[
            Tool(name=n, description=self.pipeline.policy.current.registry.tools[n].description or None,
                 input_schema=self._schemas[n], annotations=self._annotations.get(n))
            for n in self.visible(s.agent_id)])

    async def _call_tool(self, ctx, params):
        from mcp.shared.exceptions import MCPError
        from mcp_types import INVALID_PARAMS

        s = self._require(ctx)
        name, args = params.name, dict(params.arguments or {})
        meta = dict(getattr(params, "meta", None) or {})
        if name not in self.visible(s.agent_id):
            await self._log_refused(s, name, args, ctx, f"unknown tool {name!r}")
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
        problem = _schema_problem(self._schemas[name], args)
        if problem is not None:
            await self._log_refused(s, name, args, ctx, problem)
            return _error_result(f"invalid arguments: {problem}", {})
        task_id = await self._task(s)
        state = self._retry_state(params, meta)
        if state is not None:
            return await self._retry(ctx, s, task_id, name, args, state)
        req = CallRequest(
            rpc="Execute", task_id=task_id, agent_id=s.agent_id, tool=name, args=args,
            untrusted_input_source=bool(meta.get(META_UNTRUSTED, False)),
            triggering_input=str(meta.get(META_TRIGGER, ""))[:16384],
            idempotency_key=str(meta.get(META_IDEMPOTENCY, "")), principal=s.principal,
            mcp_request_id=str(getattr(ctx, "request_id", "") or ""))
        try:
            result = await self.pipeline.execute(req)
        except AeclError as e:  # refused before a decision (logged by the pipeline)
            return _error_result(f"refused: {e}", {"aecl/error": e.code})
        return await self._answer(ctx, result, name, args, task_id)

    async def _answer(self, ctx, r: ExecuteResult, name: str, args: dict[str, Any], task_id: str):
        from mcp.types import (
            CallToolResult,
            ElicitRequest,
            ElicitRequestURLParams,
            InputRequiredResult,
        )
        meta = {"aecl/decision_id": r.decision.decision_id, "aecl/event_id": r.event_id}
        if r.duplicate:
            meta["aecl/duplicate"] = True
        if r.status == "succeeded" or (r.status == "failed" and r.output is not None and r.output.get("isError")):
            return _upstream_result(r.output or {}, meta)
        if r.status == "pending_approval":
            meta[META_APPROVAL] = r.approval_id
            page = f"{self.console_url}/approvals/{r.approval_id}" if self.console_url else ""
            if _speaks_mrtr(ctx) and page:
                a = await self.pipeline.approvals.get(r.approval_id)
                state = {"approval_id": r.approval_id, "digest": args_digest(args), "tool": name, "task_id": task_id,
                         "policy_revision": r.decision.policy_revision, "expires_at": a.expires_at,
                         "nonce": secrets.token_hex(16)}
                return InputRequiredResult(
                    input_requests={APPROVAL_KEY: ElicitRequest(params=ElicitRequestURLParams(
                        mode="url", url=page,
                        message=f"AECL needs a human approval for {name}: {r.decision.reason}"))},
                    request_state=json.dumps(state, sort_keys=True), _meta=meta)
            return CallToolResult(content=[_text(
                f"approval required: approval {r.approval_id} ({r.decision.reason}). Once an approver approved it "
                f"{'at ' + page if page else 'in the console'}, send the same call again with _meta "
                f'{{"{META_APPROVAL}": "{r.approval_id}"}} to get its result; it runs once.')],
                is_error=True, _meta=meta)
        why = r.error or r.decision.reason
        return CallToolResult(content=[_text(f"{r.status}: {why}")], is_error=True, _meta=meta)

    # -- a retry after approval ------------------------------------------------------------

    def _retry_state(self, params, meta: Mapping[str, Any]) -> dict[str, Any] | None:
        raw = getattr(params, "request_state", None)
        if raw:
            try:
                state = json.loads(raw)
            except ValueError:
                state = None
            if isinstance(state, dict) and "approval_id" in state:
                return {**state, "sealed": True}
        if meta.get(META_APPROVAL):
            return {"approval_id": str(meta[META_APPROVAL]), "sealed": False}
        return None

    async def _retry(self, ctx, s: _Session, task_id: str, name: str, args: dict[str, Any], state: dict[str, Any]):
        from mcp.shared.exceptions import MCPError
        from mcp_types import INVALID_PARAMS

        approval_id = state["approval_id"]
        try:
            a = await self.pipeline.approvals.get(approval_id)
        except AeclError as e:
            raise MCPError(code=INVALID_PARAMS, message=f"approval {approval_id[:64]}: {e}") from None
        if a.agent_id != s.agent_id:
            raise MCPError(code=INVALID_PARAMS, message=f"approval {approval_id} belongs to another agent")
        if a.action_name != name or a.args_digest != args_digest(args):
            raise MCPError(code=INVALID_PARAMS, message=f"approval {approval_id} was made for another call")
        if state.get("sealed"):
            # What the state was bound to when it was minted: this approval's
            # call, its policy revision and its expiry (checked on our clock).
            if (state.get("digest") != a.args_digest or state.get("policy_revision") != a.policy_revision
                    or float(state.get("expires_at", 0)) != a.expires_at):
                raise MCPError(code=INVALID_PARAMS, message="this requestState does not match its approval")
            if state.get("nonce") in self._used_states:
                raise MCPError(code=INVALID_PARAMS, message="this requestState was used already")
        if a.status in ("approved", "executing"):  # its one run is under way: wait for its end
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RUN_WAIT_S):
                    async for a in self.pipeline.approvals.follow(approval_id):
                        if a.final:
                            break
        if not a.final:
            decision_meta = {META_APPROVAL: approval_id}
            return self._still_waiting(ctx, a, name, args, task_id, decision_meta)
        if state.get("sealed"):
            self._used_states.add(state["nonce"])
        meta = {META_APPROVAL: approval_id, "aecl/decision_id": a.decision_id}
        r = a.result or {}
        if a.status == "executed":
            return _upstream_result(r.get("output") or {}, meta)
        why = r.get("error") or f"approval {approval_id} was {a.status}" + (f": {a.comment}" if a.comment else "")
        return _error_result(f"{a.status}: {why}", meta)

    def _still_waiting(self, ctx, a, name: str, args: dict[str, Any], task_id: str, meta: dict[str, Any]):
        from mcp.types import (
            CallToolResult,
            ElicitRequest,
            ElicitRequestURLParams,
            InputRequiredResult,
        )
        page = f"{self.console_url}/approvals/{a.approval_id}" if self.console_url else ""
        if _speaks_mrtr(ctx) and page:
            state = {"approval_id": a.approval_id, "digest": a.args_digest, "tool": name, "task_id": task_id,
                     "policy_revision": a.policy_revision, "expires_at": a.expires_at,
                     "nonce": secrets.token_hex(16)}
            return InputRequiredResult(
                input_requests={APPROVAL_KEY: ElicitRequest(params=ElicitRequestURLParams(
                    mode="url", url=page, message=f"approval {a.approval_id} is {a.status}: {a.reason}"))},
                request_state=json.dumps(state, sort_keys=True), _meta=meta)
        return CallToolResult(content=[_text(f"approval {a.approval_id} is still {a.status}; retry later")],
                              is_error=True, _meta=meta)

    # -- identity and tasks ------------------------------------------------------------------

    def _require(self, ctx) -> _Session:
        s = self._session_of(ctx)
        if s is None:  # the HTTP middleware refuses before this; stdio always has one
            from mcp.shared.exceptions import MCPError
            raise MCPError(code=-32600, message="not authenticated: send `Authorization: Bearer <agent API key>`")
        return s

    def authenticate(self, authorization: str | None, *, peer: str = "") -> _Session:
        """The agent behind a bearer API key (raises Unauthenticated / NotAuthorised)."""
        from enforcer.identity.authenticate import bearer
        presented = Presented(authorization=(authorization,) if authorization else (), peer=None)
        key = bearer(presented)
        if key is None:
            raise Unauthenticated("missing_credential", "send `Authorization: Bearer <the agent's API key>`")
        cred = self.pipeline.policy.current.directory.check_key(key)
        if cred.kind != "agent":
            raise NotAuthorised("wrong_role", f"a {cred.kind} key cannot call MCP tools")
        proven = self.auth.agent_credential(Presented((), None), cred.principal_id, key)
        s = self._sessions.get(f"key:{cred.key.key_id}")
        if s is None or s.agent_id != cred.principal_id:
            s = _Session(agent_id=cred.principal_id, principal=proven.principal)
            self._sessions[f"key:{cred.key.key_id}"] = s
        return s

    async def _task(self, s: _Session) -> str:
        async with self._task_lock:
            if s.task_id and s.task_expires_at > self.pipeline.clock() + 1:
                return s.task_id
            started = await self.pipeline.start_task(StartTaskRequest(
                agent_id=s.agent_id, declared_goal=self.config.mcp.task_goal,
                declared_actions=tuple(self.visible(s.agent_id)), principal=s.principal))
            s.task_id, s.task_expires_at = started.task_id, started.expires_at
            return s.task_id

    async def _log_refused(self, s: _Session, name: str, args: dict[str, Any], ctx, why: str) -> None:
        from enforcer.errors import InvalidRequest
        await self.pipeline.log_invalid(
            "tools/call", InvalidRequest("params", why), {"agent_id": s.agent_id, "task_id": s.task_id, "tool": name},
            payload={"args": args, "mcp_request_id": str(getattr(ctx, "request_id", "") or "")},
            principal=s.principal)

    # -- serving -------------------------------------------------------------------------------

    def asgi_app(self):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Mount

        mcp_app = self.server.streamable_http_app(streamable_http_path="/mcp")
        front = self

        class Bearer:
            """Every request proves its agent before the MCP app sees it."""

            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                if scope["type"] != "http":
                    return await self.app(scope, receive, send)
                from starlette.requests import Request
                request = Request(scope)
                try:
                    session = front.authenticate(request.headers.get("authorization"))
                    claimed = request.headers.get("x-aecl-agent")  # `aecl mcp stdio --agent`
                    if claimed is not None and claimed != session.agent_id:
                        raise NotAuthorised("wrong_agent", f"the credential is agent {session.agent_id}'s, not "
                                                           f"for agent {claimed[:128]!r}")
                    scope.setdefault("state", {})["aecl_session"] = session
                except (Unauthenticated, NotAuthorised) as e:
                    await front.pipeline.log_auth_refused(
                        "mcp", e, agent_id="", task_id="", principal=getattr(e, "principal", None),
                        peer=request.client.host if request.client else "", key_id=getattr(e, "key_id", None),
                        token_id=None)
                    status = 401 if isinstance(e, Unauthenticated) else 403
                    response = JSONResponse({"error": str(e)}, status_code=status,
                                            headers={"WWW-Authenticate": 'Bearer realm="aecl"'} if status == 401 else {})
                    return await response(scope, receive, send)
                return await self.app(scope, receive, send)

        @contextlib.asynccontextmanager
        async def lifespan(app) -> AsyncIterator[None]:
            async with self.server.session_manager.run():
                yield

        return Starlette(routes=[Mount("/", app=Bearer(mcp_app))], lifespan=lifespan)

    async def start(self, listen: str) -> None:
        import uvicorn
        await self.load_upstream_tools()
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(self.asgi_app(), host=host.strip("[]"), port=int(port), log_level="warning",
                                lifespan="on")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # the service's own handlers stay in charge
        self._uvicorn = server
        self._serving = asyncio.get_running_loop().create_task(server.serve(), name="aecl-mcp")
        while not server.started:
            if self._serving.done():
                exc = self._serving.exception() if not self._serving.cancelled() else None
                raise ConfigError(f"mcp.listen: cannot serve MCP on {listen}: {exc or 'the server stopped'}")
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else int(port)
        self.url = f"http://{host}:{bound}/mcp"

    async def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._serving is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._serving, 10)

    async def serve_stdio(self, agent_id: str, credential: str) -> None:
        """`aecl mcp stdio`: one agent, its key read from a file, MCP on stdin/stdout."""
        from mcp.server.stdio import stdio_server
        s = self.authenticate(f"Bearer {credential}")
        if s.agent_id != agent_id:
            raise NotAuthorised("wrong_agent", f"the credential is agent {s.agent_id}'s, not {agent_id!r}")
        self._sessions["stdio"] = s
        await self.load_upstream_tools()
        async with stdio_server() as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())


def _speaks_mrtr(ctx) -> bool:
    """A 2026-07-28 client that declared URL elicitation (anything else cannot take input_required)."""
    if getattr(ctx, "protocol_version", None) != "2026-07-28":
        return False
    caps = (getattr(ctx, "meta", None) or {}).get("io.modelcontextprotocol/clientCapabilities") or {}
    elicitation = caps.get("elicitation") if isinstance(caps, dict) else None
    return isinstance(elicitation, dict) and elicitation.get("url") is not None


def _text(text: str):
    from mcp.types import TextContent
    return TextContent(type="text", text=text)


def _error_result(text: str, meta: dict[str, Any]):
    from mcp.types import CallToolResult
    return CallToolResult(content=[_text(text)], is_error=True, _meta=meta)


def _upstream_result(output: dict[str, Any], meta: dict[str, Any]):
    """The upstream's CallToolResult as it came back (validated again), AECL's ids in _meta."""
    from mcp.types import CallToolResult
    doc = {k: v for k, v in output.items() if k != "_meta"}
    result = CallToolResult.model_validate(doc)
    return result.model_copy(update={"meta": {**(output.get("_meta") or {}), **meta}})


def _schema_problem(schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    from jsonschema import validators
    cls = validators.validator_for(schema)
    errors = sorted(cls(schema).iter_errors(args), key=lambda e: list(e.path))
    if not errors:
        return None
    e = errors[0]
    where = ".".join(str(p) for p in e.path) or "arguments"
    return f"{where}: {e.message}"[:512]


def _version() -> str:
    from enforcer import __version__
    return __version__


__all__ = ["McpFrontEnd"]
