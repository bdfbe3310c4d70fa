"""The one serializer used for anything that is hashed or signed: RFC 8785 (JCS).

The wire format of a log line may change; what is signed is always the
canonical form produced here.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from enforcer.errors import AuditError


def canonical_json(value: Any) -> bytes:
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise AuditError(f"record cannot be canonicalised: {e}") from e
