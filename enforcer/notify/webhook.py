"""Announcing a new approval to webhooks: a signed JSON POST per webhook,
retried with exponential backoff, each attempt an audit entry.

    POST <url>
    Content-Type: application/json
    X-AECL-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
    X-AECL-Delivery: <uuid, the same on every retry of one delivery>
    X-AECL-Approval-Id: apr_...

    {"type": "approval.pending", "approval": {...approval_json...},
     "links": {"console": ..., "confirm": ...} | null, "sent_at": RFC 3339}

Why it is built this way:
- a notification never holds up the escalation: notify() only schedules
  tasks; the escalation is committed (and answered) already;
- a 2xx is delivered; anything else (a redirect too: none is followed, so a
  webhook cannot be bounced to another host) or a network error is retried
  after backoff_s * 2**(attempt-1), at most 60 s, up to max_attempts, and
  never once the approval has expired (a stale "pending" helps nobody);
- the audit entry of an attempt has the URL without userinfo or query (they
  may hold credentials); the secret and the link token (which lets its holder
  open the confirm page) go only into the request, never into the log;
- the response body is never read: a receiver cannot make the service
  buffer anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from enforcer.audit.records import NotificationRecord, Principal, timestamp
from enforcer.config import WebhookConfig
from enforcer.errors import AeclError
from enforcer.notify.secret import load_secret
from enforcer.notify.signature import sign
from enforcer.pipeline.approvals import approval_json
from enforcer.pipeline.journal import Journal
from enforcer.state.store import Approval

log = logging.getLogger(__name__)

EVENT_TYPE = "approval.pending"
MAX_BACKOFF_S = 60.0
MAX_ERROR_CHARS = 500
USER_AGENT = "aecl-webhook/1"

Links = Callable[[str, str, str], dict[str, str]]


@dataclass(frozen=True)
class _Target:
    config: WebhookConfig
    secret: bytes
    # What the audit log shows of the URL: no userinfo, query or fragment.
    shown_url: str


def display_url(url: str) -> str:
    """The URL without userinfo, query string or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class WebhookNotifier:
    def __init__(self, webhooks: list[WebhookConfig], journal: Journal, *, console_url: str | None,
                 policy_revision: Callable[[], str], clock: Callable[[], float] = time.time,
                 principal: Principal | None = None) -> None:
        # Secrets are read once, now: a missing or unsafe file stops start-up
        # with an error naming it, rather than failing every delivery later.
        self._targets = [_Target(w, load_secret(w.secret_file), display_url(w.url)) for w in webhooks]
        self._journal = journal
        self._console_url = console_url.rstrip("/") if console_url else None
        self._links: Links | None = None
        if self._console_url is not None:
            # Imported here so a console-less service does not need it; a
            # missing module with console_url set fails at start-up.
            from enforcer.console.links import approval_links
            self._links = approval_links
        self._policy_revision = policy_revision
        self._clock = clock
        self._principal = principal
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def webhooks(self) -> int:
        return len(self._targets)

    # -- scheduling -----------------------------------------------------------

    def notify(self, approval: Approval, link_token: str) -> None:
        """Approvals.on_created hook: one delivery task per webhook, on the
        running loop. Returns at once."""
        if self._closed:
            log.warning("approval %s: not announced, the notifier is closed", approval.approval_id)
            return
        if not self._targets:
            return
        links = (self._links(self._console_url, approval.approval_id, link_token)
                 if self._links is not None and self._console_url is not None else None)
        loop = asyncio.get_running_loop()
        for target in self._targets:
            task = loop.create_task(self._deliver(target, approval, links),
                                    name=f"aecl-notify-{approval.approval_id}")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Cancel deliveries still waiting or sending, then let them end."""
        self._closed = True
        tasks = list(self._pending)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def wait(self) -> None:
        """Until every scheduled delivery has ended (tests, orderly shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- one delivery -----------------------------------------------------------

    async def _deliver(self, target: _Target, a: Approval, links: dict[str, str] | None) -> None:
        delivery_id = str(uuid.uuid4())
        hook = target.config
        try:
            for attempt in range(1, hook.max_attempts + 1):
                if self._clock() >= a.expires_at:
                    await self._record(target, a, delivery_id, attempt, "gave_up", 0.0, status_code=None,
                                       error="", reason=f"not sent: the approval expired at "
                                                        f"{timestamp(a.expires_at)}")
                    return
                t0 = time.perf_counter()
                status_code, error = await self._post(target, a, links, delivery_id)
                latency = time.perf_counter() - t0
                if status_code is not None and 200 <= status_code < 300:
                    await self._record(target, a, delivery_id, attempt, "delivered", latency,
                                       status_code=status_code, error="", delivered=True,
                                       reason=f"delivered: HTTP {status_code}")
                    return
                what = error or f"HTTP {status_code}"
                delay = min(hook.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                if attempt == hook.max_attempts:
                    await self._record(target, a, delivery_id, attempt, "gave_up", latency,
                                       status_code=status_code, error=error,
                                       reason=f"{what}; gave up after {attempt} attempt(s)")
                    return
                if self._clock() + delay >= a.expires_at:
                    await self._record(target, a, delivery_id, attempt, "gave_up", latency,
                                       status_code=status_code, error=error,
                                       reason=f"{what}; gave up: the approval expires at "
                                              f"{timestamp(a.expires_at)}, before the next attempt")
                    return
                await self._record(target, a, delivery_id, attempt, "failed", latency, status_code=status_code,
                                   error=error, reason=f"{what}; retrying in {delay:g} s")
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except AeclError as e:
            # The audit log refused the entry: without a trail, stop sending.
            log.error("approval %s: webhook %s: delivery stopped, its attempt could not be logged: %s",
                      a.approval_id, target.shown_url, e)
        except Exception:  # a delivery bug is logged, never raised into the loop
            log.exception("approval %s: webhook %s: delivery failed", a.approval_id, target.shown_url)

    async def _post(self, target: _Target, a: Approval, links: dict[str, str] | None,
                    delivery_id: str) -> tuple[int | None, str]:
        """One attempt: (status code, "") or (None, why it did not get an answer)."""
        now = self._clock()
        body = json.dumps({"type": EVENT_TYPE, "approval": approval_json(a), "links": links,
                           "sent_at": timestamp(now)}, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-AECL-Signature": sign(target.secret, body, int(now)),
            "X-AECL-Delivery": delivery_id,
            "X-AECL-Approval-Id": a.approval_id,
        }
        try:
            # stream(): the status line and headers only; the body is never read.
            async with self._http().stream("POST", target.config.url, content=body, headers=headers,
                                           timeout=target.config.timeout_s) as response:
                return response.status_code, ""
        except httpx.TimeoutException:
            return None, f"timed out after {target.config.timeout_s:g} s"
        except httpx.HTTPError as e:
            # httpx may quote the request URL: show only its safe form.
            text = str(e).replace(target.config.url, target.shown_url) or type(e).__name__
            return None, f"{type(e).__name__}: {text}"[:MAX_ERROR_CHARS]

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No redirects; no proxy or .netrc from the environment: the
            # service talks to exactly the configured URL.
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def _record(self, target: _Target, a: Approval, delivery_id: str, attempt: int, outcome: str,
                      latency_s: float, *, status_code: int | None, error: str, reason: str,
                      delivered: bool = False) -> None:
        await self._journal.append(NotificationRecord(
            timestamp=timestamp(self._clock()), agent_id=a.agent_id, task_id=a.task_id, principal=self._principal,
            policy_applied=self._policy_revision(), rpc="Notify", action_name=a.action_name,
            input_payload={"delivery_id": delivery_id}, risk_score=a.risk_score, outcome=outcome, reason=reason,
            latency_ms=round(latency_s * 1000, 3), decision_id=a.decision_id, hitl_approval_id=a.approval_id,
            url=target.shown_url, attempt=attempt, status_code=status_code, delivered=delivered, error=error,
        ))
        if outcome == "gave_up":
            log.warning("approval %s: webhook %s: %s", a.approval_id, target.shown_url, reason)


__all__ = ["EVENT_TYPE", "WebhookNotifier", "display_url"]
