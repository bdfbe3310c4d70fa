"""What every world tool shares: read the call's arguments, make one request
through a connector, print the answer.

A tool addresses a connector by name (http://records/records/INV-1001): the
sandbox has no network, and HTTP_PROXY (set by AECL's bridge inside the
sandbox) sends the request to the host-side proxy, which checks it against
the connector's allowlist and adds the credential. The tool never sees one.
"""
import json
import sys
import urllib.error
import urllib.request


def args() -> dict:
    return json.load(sys.stdin)


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        print(f"{method} {url}: HTTP {e.code}: {detail}", file=sys.stderr)
        sys.exit(1)
    except urllib.error.URLError as e:
        print(f"{method} {url}: {e.reason}", file=sys.stderr)
        sys.exit(1)


def done(result: dict) -> None:
    json.dump(result, sys.stdout)
