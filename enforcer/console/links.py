"""The console URLs a notification carries for one approval.

The confirm link holds the approval's single-use link token. Opening it
changes nothing (mail scanners and link previews follow links): it shows the
approval behind a login and a confirm form, and only that form's POST
resolves it (enforcer.console.app).
"""

from __future__ import annotations

from urllib.parse import quote


def approval_links(base_url: str, approval_id: str, link_token: str) -> dict[str, str]:
    """{"console": the approval's page, "confirm": the one-time confirm link}."""
    base = base_url.rstrip("/")
    aid = quote(approval_id, safe="")
    return {"console": f"{base}/approvals/{aid}",
            "confirm": f"{base}/approvals/{aid}/confirm?t={quote(link_token, safe='')}"}


__all__ = ["approval_links"]
