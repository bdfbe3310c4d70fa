"""The request as the log records it (the seed's input_payload)."""

from __future__ import annotations

from typing import Any

from enforcer.pipeline.request import CallRequest


def payload(req: CallRequest) -> dict[str, Any]:
    return {
        "args": req.args,
        "context": {
            "untrusted_input_source": req.untrusted_input_source,
            "triggering_input": req.triggering_input,
        },
        "idempotency_key": req.idempotency_key or None,
    }
