"""`aecl mcp stdio`: the MCP front end for clients that launch a local
command (Claude Desktop, editors). It is a relay, not a second service: each
JSON-RPC message read from stdin is sent to the running service's MCP
endpoint (Streamable HTTP) with the agent's key as bearer, and the answer is
written to stdout, one JSON message per line. So there is one pipeline, one
audit log and one approval queue, whichever way a client connects.

The agent's key is read from a file (0600 or stricter), never from the
command line or the environment of the client's config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

# Standard request headers of Streamable HTTP (2026-07-28): from the message itself.
PROTOCOL_HEADER = "MCP-Protocol-Version"


def read_credential(path: Path) -> str:
    from enforcer.notify.secret import load_secret
    return load_secret(path, "the agent's credential file").decode()


def headers_for(message: dict[str, Any]) -> dict[str, str]:
    """Mcp-Method, Mcp-Name and the protocol version, as the transport requires."""
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    method = message.get("method")
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    if isinstance(method, str):
        h["Mcp-Method"] = method
    name = params.get("name") or params.get("uri")
    if isinstance(name, str) and name.isascii():
        h["Mcp-Name"] = name
    meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
    version = meta.get("io.modelcontextprotocol/protocolVersion")
    if isinstance(version, str):
        h[PROTOCOL_HEADER] = version
    return h


def answers(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of one HTTP answer (plain JSON, or an SSE stream's data lines)."""
    if "text/event-stream" in content_type:
        out, data = [], []
        for line in body.decode().splitlines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line.strip() and data:
                out.append(json.loads("\n".join(data)))
                data = []
        if data:
            out.append(json.loads("\n".join(data)))
        return out
    return [json.loads(body)] if body.strip() else []


def relay(url: str, credential: str, agent_id: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """The service refuses the key if it is not `agent_id`'s (X-AECL-Agent)."""
    import httpx
    with httpx.Client(timeout=None, trust_env=False,
                      headers={"Authorization": f"Bearer {credential}", "X-AECL-Agent": agent_id}) as http:
        for line in stdin:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError as e:
                _write(stdout, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": f"Parse error: {e}"}})
                continue
            try:
                r = http.post(url, content=line.encode(), headers=headers_for(message if isinstance(message, dict)
                                                                            else {}))
            except httpx.HTTPError as e:
                if isinstance(message, dict) and "id" in message:
                    _write(stdout, {"jsonrpc": "2.0", "id": message["id"],
                                    "error": {"code": -32603, "message": f"AECL is not reachable at {url}: {e}"}})
                continue
            if r.status_code in (401, 403):
                print(f"aecl mcp stdio: {url} refused the credential ({r.status_code}): {r.text[:200]}",
                      file=sys.stderr)
                return 1
            for answer in answers(r.content, r.headers.get("content-type", "")):
                _write(stdout, answer)
    return 0


def _write(stdout: TextIO, message: dict[str, Any]) -> None:
    stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    stdout.flush()
