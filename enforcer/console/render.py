"""The console's one jinja2 environment.

Autoescaping is on for every template (not only *.html), undefined names
are errors, and every value from an agent goes through `visible` first, so
control and bidi-formatting characters show as escapes instead of
reordering or hiding what the approver reads (enforcer.audit.report).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from enforcer.audit.records import timestamp
from enforcer.audit.report import visible

TEMPLATES = Path(__file__).with_name("templates")


def pretty(value: Any) -> str:
    """JSON for a <pre>, invisible characters escaped (escaped again as HTML by autoescape)."""
    return visible(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def ts(value: float | None) -> str:
    return "" if value is None else timestamp(value)


def short_time(value: float | str | None) -> str:
    """A human-readable UTC time (the exact RFC 3339 one goes in a title/datetime)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return visible(value)
    else:
        t = datetime.fromtimestamp(value, UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(visible=visible, pretty=pretty, ts=ts, short_time=short_time)
    return env


__all__ = ["environment", "pretty", "short_time", "ts"]
