"""The HTML report in a real browser (Debian's headless Chromium): a log whose
agent input is an HTML/JS payload renders it as text, runs no script and
loads nothing; the Content-Security-Policy alone would stop an injected
script or image too; the embedded stylesheet is allowed (by its hash) and
applies. The screenshot is kept as tests/artifacts/report.png."""

from __future__ import annotations

import html
import json
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from enforcer.audit.keys import generate_keypair
from tests.audit.stories import write_story
from tests.conftest import REPO

ARTIFACTS = REPO / "tests" / "artifacts"
MARK = "PW" + "NED"  # only a script that ran can write this word into the page


def chromium_binary() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("Chromium is not installed (/usr/bin/chromium): run scripts/setup.sh --dev, which installs "
                "Debian's chromium package, to run the HTML report's browser test")


class Hits:
    """A local web server that records every request a page makes."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        hits = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"document.body.append('" + MARK.encode() + b"')")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hits():
    h = Hits()
    yield h
    h.close()


def payload(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return (f'</pre></td></tr></table><script>document.body.append("PW"+"NED")</script>'
            f'<img src="{base}/img.png" onerror="document.body.append(\'PW\'+\'NED\')">'
            f'"><svg onload="document.body.append(\'PW\'+\'NED\')"></svg>'
            f"<script src=\"{base}/script.js\"></script><link rel=stylesheet href=\"{base}/style.css\">"
            f"<iframe src=\"{base}/frame\"></iframe><style>body{{display:none}}</style>&amp; &lt;")


def chromium(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,2000", *mode,
         page.as_uri()],
        capture_output=True, text=True, timeout=180, cwd=tmp)


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def elements(dom: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Elements()
    p.feed(dom)
    return p.tags


def png_pixel(data: bytes, x: int, y: int) -> tuple[int, ...]:
    """One pixel of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, _, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    for row in range(y + 1):
        f, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
    return tuple(prev[x * bpp:(x + 1) * bpp])


@pytest.fixture
def report(tmp_path, hits):
    priv, pub = generate_keypair(tmp_path / "keys")
    log = tmp_path / "log" / "audit.jsonl"
    attack = payload(hits.port)
    ids = write_story(log, priv, tasks=2, payload=attack)
    out = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "enforcer", "audit", "report", "--log", str(log), "--pubkey", str(pub),
                        "--checkpoint", str(log.parent / "audit.jsonl.checkpoint"), "--task", ids[0], "--out",
                        str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return out, attack


def test_the_report_shows_attacker_input_as_text_and_runs_nothing(report, hits, tmp_path):
    page, attack = report
    dump = chromium(page, tmp_path, "--dump-dom")
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = dump.stdout
    assert "Verification: VERIFIED" in dom and "transfer_funds" in dom
    # The payload is on the page as text, verbatim: what the DOM serialiser writes for a text node.
    def as_text(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    assert as_text(attack) in dom  # the triggering input
    assert as_text(json.dumps(attack, ensure_ascii=False)) in dom  # the reference argument, inside the arguments' JSON
    assert MARK not in dom  # no script ran, no handler fired
    tags = [t for t, _ in elements(dom)]
    for forbidden in ("script", "img", "svg", "iframe", "link", "object", "embed", "form", "base"):
        assert forbidden not in tags, forbidden
    assert tags.count("style") == 1 and tags.count("meta") == 4
    for tag, attrs in elements(dom):
        assert not any(a.startswith("on") or a in ("src", "href", "srcset", "style", "action") for a in attrs), tag
    assert hits.paths == []  # nothing was loaded
    shot = ARTIFACTS / "report.png"
    ARTIFACTS.mkdir(exist_ok=True)
    r = chromium(page, tmp_path, f"--screenshot={shot}")
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]
    print(f"\nreport screenshot: {shot}")
    # The embedded stylesheet applied (its hash is what the CSP allows): the page background is its colour.
    assert png_pixel(shot.read_bytes(), 3, 3)[:3] == (0xEE, 0xF1, 0xF5)
    assert hits.paths == []


def test_the_csp_alone_stops_an_injected_script_and_load(report, hits, tmp_path):
    """Were a value ever to escape the escaping, the policy would still
    block it; the same injection without the policy does run (the control)."""
    page, _ = report
    text = page.read_text()
    csp = text[text.index('<meta http-equiv="Content-Security-Policy"'):]
    csp = csp[:csp.index(">") + 1]
    assert "default-src 'none'" in csp and "script-src 'none'" in csp and "unsafe-inline" not in csp
    injected = (f'<script>document.body.append("PW"+"NED")</script>'
                f'<img src="http://127.0.0.1:{hits.port}/csp.png">')
    attacked = tmp_path / "attacked.html"
    attacked.write_text(text.replace("<body>", "<body>" + injected, 1))
    dom = chromium(attacked, tmp_path, "--dump-dom").stdout
    assert "Verification: VERIFIED" in dom and MARK not in dom and hits.paths == []
    control = tmp_path / "control.html"
    control.write_text(text.replace(csp, "").replace("<body>", "<body>" + injected, 1))
    dom = chromium(control, tmp_path, "--dump-dom").stdout
    assert MARK in dom and hits.paths == ["/csp.png"]  # without the policy, the same injection runs and loads


def test_the_report_escapes_every_value(report):
    """No value of the log reaches the HTML unescaped: the payload's markup
    never appears as markup in the file itself."""
    page, attack = report
    text = page.read_text()
    assert attack not in text
    assert html.escape(attack, quote=True) in text
    assert text.count("<script") == 0 and text.count("<style") == 1
