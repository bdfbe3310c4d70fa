"""What every world tool shares: read the call's arguments, make requests
through a connector, print the answer.

A tool addresses a connector by name (http://records/records/INV-1001): the
sandbox has no network, and HTTP_PROXY (set by AECL's bridge inside the
sandbox) sends the request to the host-side proxy, which checks it against
the connector's allowlist and adds the credential (and, for a call with an
idempotency key, the Idempotency-Key header). The tool never sees one.

A write tool's answer carries `rollback_token`: what its compensation needs
to undo it (a transfer id, a record id, a snapshot id). A failure is a line
on stderr and exit status 1.
"""
import json
import sys
import urllib.error
import urllib.request


def args() -> dict:
    return json.load(sys.stdin)


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def _send(method: str, url: str, body: dict | None, headers: dict | None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()
    except urllib.error.URLError as e:
        fail(f"{method} {url}: {e.reason}")
    except OSError as e:  # e.g. a timeout while reading the answer
        fail(f"{method} {url}: {e}")


def _json(method: str, url: str, status: int, raw: bytes) -> dict:
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        fail(f"{method} {url}: HTTP {status}: the answer is not a JSON object: {raw[:200].decode(errors='replace')}")
    return answer


def request(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """(status, JSON object) of any HTTP answer, error statuses included; a
    network failure or an answer that is not a JSON object ends the tool."""
    status, raw = _send(method, url, body, headers)
    return status, _json(method, url, status, raw)


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> dict:
    """The JSON answer of a 2xx; any other status ends the tool, naming it."""
    status, raw = _send(method, url, body, headers)
    if not 200 <= status < 300:
        fail(f"{method} {url}: HTTP {status}: {raw.decode(errors='replace')[:500]}")
    return _json(method, url, status, raw)


def unexpected(method: str, url: str, status: int, answer: dict) -> None:
    """End the tool on an answer it has no meaning for."""
    fail(f"{method} {url}: HTTP {status}: {json.dumps(answer)[:500]}")


def done(result: dict) -> None:
    json.dump(result, sys.stdout)
