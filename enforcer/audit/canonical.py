"""The one serializer used for anything that is hashed or signed: RFC 8785 (JCS).

The wire format of a log line may change; what is signed is always the
canonical form produced here.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from enforcer.errors import RecordError


def canonical_json(value: Any) -> bytes:
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        # RFC 8785 numbers are IEEE doubles. A whole double past 2**53 is
        # written as digits and read back by Python as an int; it is still the
        # same number, so it canonicalises as the double it is. An int no
        # double can hold exactly stays refused.
        return canonical_json(_ints_as_doubles(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise RecordError(f"record cannot be canonicalised: {e}") from e


def _ints_as_doubles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ints_as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints_as_doubles(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
        as_double = float(value)
        # Accepted only when these digits are exactly how RFC 8785 writes that double.
        if rfc8785.dumps(as_double) != str(value).encode():
            raise RecordError(f"record cannot be canonicalised: {value} is not exactly representable as a JSON number")
        return as_double
    return value
