"""The console under the service's TLS, in-process: the service's real
components (build_components, as `aecl serve` makes them) and a real
ConsoleServer on a free port, over HTTPS with the dev CA. Its session
cookie is Secure."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from enforcer.config import load_config
from enforcer.console.server import ConsoleServer
from enforcer.server.app import build_components
from tests.conftest import REPO, read_keys, write_config
from tests.console.conftest import hidden


def test_over_tls_the_console_is_https_and_its_cookie_is_secure(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    subprocess.run([sys.executable, "-m", "enforcer", "certs", "dev", "--out", str(certs)], cwd=REPO, check=True,
                   capture_output=True)
    path = write_config(tmp_path / "svc", plaintext=False, console={"listen": "127.0.0.1:0"},
                        tls={"cert": str(certs / "server.pem"), "key": str(certs / "server.key")})
    config = load_config(path)
    key = read_keys(tmp_path / "svc" / "credentials")["approver"]

    async def main() -> tuple[str, httpx.Response, httpx.Response]:
        components = build_components(config)
        console = ConsoleServer(config, components.pipeline, components.authenticator)
        await console.start()
        try:
            async with httpx.AsyncClient(base_url=console.url, verify=ssl.create_default_context(cafile=str(certs / "ca.pem")), timeout=30) as c:
                page = await c.get("/login")
                r = await c.post("/login", data={"csrf_token": hidden(page.text, "csrf_token"), "next": "/",
                                                 "api_key": key})
                queue = await c.get("/")
            return console.url, r, queue
        finally:
            await console.stop()
            components.close()

    url, r, queue = asyncio.run(main())
    assert url.startswith("https://127.0.0.1:") and not url.endswith(":0")
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("aecl_session="))
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "secure" in attrs and "httponly" in attrs and "samesite=strict" in attrs
    assert queue.status_code == 200 and "Waiting for approval" in queue.text
