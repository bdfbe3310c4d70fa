"""The console's routes: login, the queue, one approval, the confirm link,
a task's verified timeline, and what needs attention.

Every approval read or change goes through the pipeline's Approvals facade
(enforcer.pipeline.approvals); the console keeps no approval state of its
own. Rules every route follows:
- without a live session, a page redirects to /login?next=<itself>, and a
  stream or fragment (what scripts fetch) answers 401;
- every POST is checked for its CSRF token before anything else happens: a
  missing or wrong one is 403 and nothing changes;
- a GET never changes anything (the confirm link included: scanners follow
  links);
- errors are pages with their status: NotFound 404, ApprovalStateError 409,
  NotAuthorised 403, InvalidRequest 400, an unreadable audit log 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from enforcer.config import ServiceConfig
from enforcer.console.attention import select_attention
from enforcer.console.render import environment
from enforcer.console.security import safe_next
from enforcer.console.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginCsrf,
    Session,
    SessionStore,
    new_token,
    tokens_equal,
)
from enforcer.console.timeline import (
    LogReader,
    audit_public_keys,
    entries_of,
    task_timeline,
)
from enforcer.errors import (
    AeclError,
    ApprovalStateError,
    AuditError,
    InvalidRequest,
    NotAuthorised,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from enforcer.identity.authenticate import Authenticator, Presented
from enforcer.pipeline.approvals import MAX_PAGE_SIZE, WatcherLagged, approval_json
from enforcer.pipeline.pipeline import Pipeline
from enforcer.state.store import Approval

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
# A stream with nothing to say still speaks this often, so a dead session
# (logged out, key revoked) or a gone client is noticed.
HEARTBEAT_S = 15.0
MAX_FORM_FIELDS = 16
MAX_KEY_CHARS = 512


class LoginRequired(Exception):
    def __init__(self, next_url: str, api: bool) -> None:
        super().__init__("login required")
        self.next_url = next_url
        self.api = api


class CsrfRefused(Exception):
    """A POST without its session's (or the login form's) CSRF token."""


class Console:
    def __init__(self, config: ServiceConfig, pipeline: Pipeline, authenticator: Authenticator, *,
                 secure_cookies: bool, closing: asyncio.Event) -> None:
        self.config = config
        self.pipeline = pipeline
        self.approvals = pipeline.approvals
        self.authenticator = authenticator
        self.secure_cookies = secure_cookies
        self.closing = closing  # set when the console stops: every stream ends
        self.sessions = SessionStore(config.console.session_ttl_s)
        self.login_csrf = LoginCsrf()
        self.log_reader = LogReader(config.audit.path, audit_public_keys(config.audit))
        self.env = environment()

    # -- the application ---------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", self.queue, methods=["GET"]),
            Route("/fragments/queue", self.queue_fragment, methods=["GET"]),
            Route("/events", self.queue_events, methods=["GET"]),
            Route("/api/approvals/{approval_id}", self.approval_api, methods=["GET"]),
            Route("/approvals/{approval_id}", self.approval_page, methods=["GET"]),
            Route("/fragments/approvals/{approval_id}", self.approval_fragment, methods=["GET"]),
            Route("/approvals/{approval_id}/events", self.approval_events, methods=["GET"]),
            Route("/approvals/{approval_id}/resolve", self.resolve, methods=["POST"]),
            Route("/approvals/{approval_id}/confirm", self.confirm_page, methods=["GET"]),
            Route("/approvals/{approval_id}/confirm", self.confirm, methods=["POST"]),
            Route("/tasks/{task_id}", self.task_page, methods=["GET"]),
            Route("/attention", self.attention_page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        handlers: dict[Any, Callable[..., Any]] = {
            LoginRequired: self._login_required, CsrfRefused: self._csrf_refused, AeclError: self._aecl_error,
            HTTPException: self._http_error, Exception: self._server_error,
        }
        return Starlette(routes=routes, exception_handlers=handlers)

    # -- sessions ----------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), self.pipeline.policy.current.directory.keys)

    def require(self, request: Request, *, api: bool = False) -> Session:
        s = self.session_of(request)
        if s is None:
            query = request.url.query
            raise LoginRequired(request.url.path + (f"?{query}" if query else ""), api)
        return s

    def still_valid(self, s: Session) -> bool:
        return self.sessions.get(s.session_id, self.pipeline.policy.current.directory.keys) is not None

    async def form(self, request: Request) -> FormData:
        return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)

    async def checked_form(self, request: Request, s: Session) -> FormData:
        form = await self.form(request)
        if not tokens_equal(s.csrf_token, form.get("csrf_token")):
            raise CsrfRefused()
        return form

    def _cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                            secure=self.secure_cookies)

    # -- rendering -----------------------------------------------------------------

    def page(self, template: str, *, session: Session | None, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            session=session, principal=session.principal if session else None,
            csrf_token=session.csrf_token if session else "", now=self.pipeline.clock(), **context)
        return HTMLResponse(html, status_code=status)

    def approval_context(self, a: Approval) -> dict[str, Any]:
        return {"a": a, "left_s": max(0.0, a.expires_at - self.pipeline.clock())}

    # -- login / logout -------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if self.session_of(request) is not None:
            return RedirectResponse(target, status_code=303)
        return self._login_form(request, target)

    def _login_form(self, request: Request, target: str, *, error: str = "", status: int = 200) -> Response:
        # Reuse a well-formed pre-session cookie, so two login tabs both work.
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if len(cookie) < 16 or len(cookie) > 128:
            cookie = new_token()
        response = self.page("login.html", session=None, status=status, login_token=self.login_csrf.form_token(cookie),
                             next_url=target, error=error)
        self._cookie(response, LOGIN_COOKIE, cookie, max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        if not self.login_csrf.check(request.cookies.get(LOGIN_COOKIE), form.get("csrf_token")):
            raise CsrfRefused()
        target = safe_next(form.get("next"))
        key = form.get("api_key")
        key = key.strip() if isinstance(key, str) else ""
        try:
            if len(key) > MAX_KEY_CHARS:
                raise Unauthenticated("malformed_credential", "the API key is not of the form aecl_<key id>_<secret>")
            proven = self.authenticator.role(Presented(authorization=(f"Bearer {key}",), peer=None), "approver")
            credential = self.pipeline.policy.current.directory.keys.get(proven.principal.key_id or "")
            if credential is None:  # the directory was reloaded in between
                raise Unauthenticated("unknown_key", "the API key is not known (any more)")
        except (Unauthenticated, NotAuthorised) as e:
            await self.pipeline.log_auth_refused(
                "ConsoleLogin", e, agent_id="", task_id="", principal=getattr(e, "principal", None),
                peer=request.client.host if request.client else "", key_id=getattr(e, "key_id", None),
                token_id=None)
            status = 401 if isinstance(e, Unauthenticated) else 403
            why = ("This key was not accepted." if status == 401
                   else f"Only an approver's key can log in to the console ({e}).")
            return self._login_form(request, target, error=why, status=status)
        s = self.sessions.create(proven.principal, credential)
        log.info("console: approver %s logged in from %s", s.principal.id,
                 request.client.host if request.client else "?")
        response = RedirectResponse(target, status_code=303)
        self._cookie(response, SESSION_COOKIE, s.session_id, max_age=int(self.config.console.session_ttl_s))
        response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookies)
        return response

    async def logout(self, request: Request) -> Response:
        s = self.session_of(request)
        if s is not None:
            await self.checked_form(request, s)
            self.sessions.drop(s.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookies)
        return response

    # -- the queue --------------------------------------------------------------------

    async def _pending(self) -> list[Approval]:
        return sorted(await self.approvals.pending(), key=lambda a: (a.expires_at, a.approval_id))

    async def queue(self, request: Request) -> Response:
        s = self.require(request)
        return self.page("queue.html", session=s, pending=[self.approval_context(a) for a in await self._pending()])

    async def queue_fragment(self, request: Request) -> Response:
        s = self.require(request, api=True)
        return self.page("_queue_list.html", session=s,
                         pending=[self.approval_context(a) for a in await self._pending()])

    async def queue_events(self, request: Request) -> Response:
        s = self.require(request, api=True)
        return self._stream(s, self.approvals.changes(include_pending=True))

    # -- one approval -------------------------------------------------------------------

    async def approval_api(self, request: Request) -> Response:
        self.require(request, api=True)
        return JSONResponse(approval_json(await self.approvals.get(request.path_params["approval_id"])))

    async def approval_page(self, request: Request) -> Response:
        s = self.require(request)
        a = await self.approvals.get(request.path_params["approval_id"])
        return self.page("approval.html", session=s, **self.approval_context(a), link_token="")

    async def approval_fragment(self, request: Request) -> Response:
        s = self.require(request, api=True)
        a = await self.approvals.get(request.path_params["approval_id"])
        return self.page("_approval_state.html", session=s, **self.approval_context(a))

    async def approval_events(self, request: Request) -> Response:
        s = self.require(request, api=True)
        approval_id = request.path_params["approval_id"]
        await self.approvals.get(approval_id)  # a 404 before the stream starts
        return self._stream(s, self.approvals.follow(approval_id))

    async def resolve(self, request: Request) -> Response:
        s = self.require(request)
        form = await self.checked_form(request, s)
        return await self._resolve(request.path_params["approval_id"], form, s, link_token=None)

    async def _resolve(self, approval_id: str, form: FormData, s: Session, *, link_token: str | None) -> Response:
        decision = form.get("decision")
        if decision not in ("approve", "reject"):
            raise InvalidRequest("decision", "must be approve or reject")
        comment = form.get("comment", "")
        if not isinstance(comment, str):
            raise InvalidRequest("comment", "must be text")
        await self.approvals.resolve(approval_id, approve=decision == "approve", comment=comment.replace("\r\n", "\n"),
                                     approver=s.principal, link_token=link_token,
                                     rpc="Console" if link_token is None else "ConsoleConfirm")
        return RedirectResponse(f"/approvals/{quote(approval_id, safe='')}", status_code=303)

    # -- the notification link -------------------------------------------------------------

    async def confirm_page(self, request: Request) -> Response:
        """Shows the approval and a form; changes nothing (the token is
        checked, and used, only by the form's POST)."""
        s = self.require(request)
        a = await self.approvals.get(request.path_params["approval_id"])
        token = request.query_params.get("t", "")
        if not token:
            raise InvalidRequest("t", "the link has no token: open the approval in the console")
        return self.page("approval.html", session=s, **self.approval_context(a), link_token=token)

    async def confirm(self, request: Request) -> Response:
        s = self.require(request)
        form = await self.checked_form(request, s)
        token = form.get("t")
        if not isinstance(token, str) or not token or len(token) > 256:
            raise InvalidRequest("t", "the confirm form carries no link token")
        return await self._resolve(request.path_params["approval_id"], form, s, link_token=token)

    # -- the audit log ----------------------------------------------------------------------

    async def task_page(self, request: Request) -> Response:
        s = self.require(request)
        task_id = request.path_params["task_id"]
        approvals, _ = await self.approvals.list(task_id=task_id, page_size=MAX_PAGE_SIZE)
        status = await self.log_reader.status()
        rows = task_timeline(status.log, task_id) if status.log is not None else []
        found = bool(rows or approvals) or not status.verified
        return self.page("task.html", session=s, status=200 if found else 404, task_id=task_id, log=status,
                         rows=rows, approvals=approvals)

    async def attention_page(self, request: Request) -> Response:
        s = self.require(request)
        failed: list[Approval] = []
        token = ""
        while True:  # every failed approval, page by page
            rows, token = await self.approvals.list(status="failed", page_size=MAX_PAGE_SIZE, page_token=token)
            failed += rows
            if not token:
                break
        status = await self.log_reader.status()
        registry = self.pipeline.policy.current.registry
        write_tools = {name for name, t in registry.tools.items() if t.access == "write"}
        items = select_attention(entries_of(status), failed, write_tools)
        return self.page("attention.html", session=s, log=status, items=items)

    # -- streams ----------------------------------------------------------------------------

    def _stream(self, s: Session, source: AsyncIterator[Approval]) -> StreamingResponse:
        return StreamingResponse(self._events(s, source), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def _events(self, s: Session, source: AsyncIterator[Approval]) -> AsyncIterator[str]:
        """Server-sent events: `approval` (approval_json) per change; `end`
        when the followed approval is final; `lagged` when the watcher was
        dropped (the page reloads); `logout` when the session died."""
        closing = asyncio.ensure_future(self.closing.wait())
        nxt: asyncio.Future[Approval] | None = None
        try:
            yield "retry: 3000\n\n"
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait({nxt, closing}, timeout=HEARTBEAT_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if closing in done:
                    return
                if not self.still_valid(s):
                    yield "event: logout\ndata: {}\n\n"
                    return
                if nxt not in done:
                    yield ": keepalive\n\n"
                    continue
                done_nxt, nxt = nxt, None
                try:
                    a = done_nxt.result()
                except StopAsyncIteration:
                    yield "event: end\ndata: {}\n\n"
                    return
                except WatcherLagged:
                    yield "event: lagged\ndata: {}\n\n"
                    return
                yield f"event: approval\ndata: {json.dumps(approval_json(a), default=str)}\n\n"
        finally:
            closing.cancel()
            if nxt is not None:
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    # -- errors ------------------------------------------------------------------------------

    async def _login_required(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        if exc.api:
            return JSONResponse({"error": "unauthenticated", "message": "log in to the console"}, status_code=401)
        return RedirectResponse("/login?" + urlencode({"next": exc.next_url}), status_code=303)

    async def _csrf_refused(self, request: Request, exc: Exception) -> Response:
        return self.page("error.html", session=self.session_of(request), status=403, title="Refused",
                         message="The form's CSRF token is missing or wrong: nothing was done. Reload the page "
                                 "and try again.")

    async def _aecl_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AeclError)
        if isinstance(exc, NotFound):
            status, title = 404, "Not found"
        elif isinstance(exc, ApprovalStateError):
            status, title = 409, "Cannot do that now"
        elif isinstance(exc, PermissionDenied):  # NotAuthorised too: self-approval, wrong role
            status, title = 403, "Not allowed"
        elif isinstance(exc, InvalidRequest):
            status, title = 400, "Invalid request"
        elif isinstance(exc, AuditError):
            status, title = 503, "The audit log is unavailable"
        else:
            log.exception("console: %s", exc)
            status, title = 500, "Something went wrong"
        message = str(exc) if status != 500 else "The service could not complete this request."
        if _for_scripts(request):
            return JSONResponse({"error": exc.code, "message": message}, status_code=status)
        return self.page("error.html", session=self.session_of(request), status=status, title=title, message=message)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.page("error.html", session=self.session_of(request), status=exc.status_code,
                         title="Not found" if exc.status_code == 404 else "Error", message=str(exc.detail))

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        log.exception("console: unexpected error on %s", request.url.path)
        return HTMLResponse("<!DOCTYPE html><title>Error</title><p>Something went wrong.</p>", status_code=500)


def _for_scripts(request: Request) -> bool:
    """Paths that console.js (or another program) reads: errors as JSON."""
    path = request.url.path
    return path.startswith(("/api/", "/fragments/")) or path == "/events" or path.endswith("/events")


__all__ = ["Console", "CsrfRefused", "LoginRequired"]
