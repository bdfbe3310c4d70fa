"""The request as the log records it (the seed's input_payload)."""

from __future__ import annotations

import hashlib
from typing import Any

from enforcer.audit.canonical import canonical_json
from enforcer.pipeline.request import CallRequest


def args_digest(args: dict[str, Any]) -> str:
    """A call's binding (approvals, idempotency keys): sha256 of the RFC 8785
    form of its arguments."""
    return "sha256:" + hashlib.sha256(canonical_json(args)).hexdigest()


def payload(req: CallRequest) -> dict[str, Any]:
    return {
        "args": req.args,
        "context": {
            "untrusted_input_source": req.untrusted_input_source,
            "triggering_input": req.triggering_input,
        },
        "idempotency_key": req.idempotency_key or None,
        **({"mcp_request_id": req.mcp_request_id} if req.mcp_request_id else {}),
    }
