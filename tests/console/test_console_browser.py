"""The console in a real browser (Debian's Chromium through Playwright)
against a real `aecl serve` over the example world: an approver logs in,
sees the escalated transfer with its risk and its (hostile) triggering
input, approves it with a comment, and watches it execute; the transfer
really happened at the payments service. The payload in the triggering
input never runs, and no page breaks its own CSP."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.console.conftest import ARTIFACTS, PAYLOAD, ConsoleService

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
WAIT_MS = 60_000  # a bound on waiting for a state, not an assertion about speed


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page whose dialogs and CSP violations are recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.console: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", lambda m: self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or m.startswith("pageerror")]


def transfer(console: ConsoleService, transfer_id: str) -> dict[str, Any]:
    key = Path(console.world.urls["payments_key_file"]).read_text().strip()
    req = urllib.request.Request(f"{console.world.urls['payments']}/transfers/{transfer_id}",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_an_approver_approves_a_transfer_and_sees_it_executed(console: ConsoleService, browser: Browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    approval_id = console.escalate(triggering_input=PAYLOAD, amount=100000, read_first=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    w = Watched(context.new_page())
    page = w.page
    try:
        page.goto(console.url + "/")
        expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
        page.fill("#api_key", console.svc.key("approver"))
        page.click("button[type=submit]")
        expect(page).to_have_url(console.url + "/")

        card = page.locator(f"article#{approval_id}")
        expect(card).to_be_visible()
        expect(card.locator(".tool").first).to_have_text("transfer_funds")
        risk = card.locator(".risk").first
        score = float(risk.get_attribute("data-risk") or "nan")
        assert score >= 0.7
        expect(risk).to_have_text(f"{score:.2f}")
        expect(card.locator("ul.flags li").first).to_contain_text("weight")
        # The payload is shown, exactly, as text in a <pre> marked untrusted; it is no element.
        expect(card.locator("pre.triggering")).to_have_text(PAYLOAD)
        expect(card.locator(".untrusted .badge")).to_have_text("UNTRUSTED")
        assert page.locator("img[src=x]").count() == 0 and page.locator("main script").count() == 0
        expect(card.locator("table.history tbody tr")).to_have_count(1)
        expect(card.locator("table.history tbody tr td").first).to_have_text("read_invoice")
        expect(card.locator(".countdown").first).to_have_text(re.compile(r"\d+s left$"))

        # Live: a new escalation appears without a reload.
        page.evaluate("window.__same_document = true")
        second = console.escalate(triggering_input="second one", amount=200000)
        expect(page.locator(f"article#{second}")).to_be_visible(timeout=WAIT_MS)
        assert page.evaluate("window.__same_document === true")
        page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)

        card.get_by_role("link", name="Review and decide").click()
        expect(page).to_have_url(f"{console.url}/approvals/{approval_id}")
        expect(page.locator("#status")).to_have_text("pending")
        expect(page.locator("pre.triggering")).to_have_text(PAYLOAD)
        page.fill("#comment", "checked with the vendor <b>by phone</b>")
        page.screenshot(path=str(ARTIFACTS / "console-approval.png"), full_page=True)
        page.click("#approve")

        expect(page).to_have_url(f"{console.url}/approvals/{approval_id}")
        # The state updates live until the call has run.
        expect(page.locator("#status")).to_have_text("executed", timeout=WAIT_MS)
        expect(page.locator("#result-status")).to_have_text("succeeded")
        expect(page.locator("#decide")).to_have_count(0)
        expect(page.locator("pre.comment")).to_have_text("checked with the vendor <b>by phone</b>")
        output = json.loads(page.locator("#result-output").inner_text())
        assert output["transfer_id"] and output["amount"] == 100000
        page.screenshot(path=str(ARTIFACTS / "console-executed.png"), full_page=True)

        # It really ran: the payments service has the transfer.
        done = transfer(console, output["transfer_id"])
        assert done["amount"] == 100000 and done["vendor"] == "V-221"
        a = console.approval(console.login(), approval_id)
        assert a["status"] == "executed" and a["approver"]["id"] == "approver"

        # The task's verified timeline shows decision, approval and execution, in order.
        page.click(f"a[href='/tasks/{a['task_id']}']")
        expect(page.locator("#verification")).to_have_attribute("data-verified", "true")
        kinds = page.locator("#timeline tbody tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
        # read_invoice ran; transfer_funds escalated, was approved, decided again and ran
        assert [k for k in kinds if k in ("decision", "approval", "execution")] == [
            "decision", "execution", "decision", "approval", "decision", "execution"]
        assert "connector_request" in kinds

        # The second one is still pending on the queue, the first gone.
        page.goto(console.url + "/")
        expect(page.locator(f"article#{second}")).to_be_visible()
        expect(page.locator(f"article#{approval_id}")).to_have_count(0)
    finally:
        context.close()
    assert w.dialogs == []  # the payload never ran
    assert w.csp_violations() == []  # and no page needed anything its CSP forbids


def test_a_rejection_in_another_browser_reaches_an_open_approval_page(console: ConsoleService,
                                                                       browser: Browser) -> None:
    approval_id = console.escalate()
    context = browser.new_context()
    w = Watched(context.new_page())
    page = w.page
    try:
        page.goto(f"{console.url}/approvals/{approval_id}")
        page.fill("#api_key", console.svc.key("approver"))
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{console.url}/approvals/{approval_id}")
        expect(page.locator("#decide")).to_be_visible()
        c = console.login()
        r = c.post(f"/approvals/{approval_id}/resolve",
                   data={"csrf_token": _csrf(c), "decision": "reject", "comment": "elsewhere"})
        assert r.status_code == 303
        expect(page.locator("#status")).to_have_text("rejected", timeout=WAIT_MS)
        expect(page.locator("#decide")).to_have_count(0)
    finally:
        context.close()
    assert w.dialogs == [] and w.csp_violations() == []


def _csrf(c: Any) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/").text)
    assert m
    return m.group(1)
