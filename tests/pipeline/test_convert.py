"""Untrusted args at the wire: depth, finite numbers and size, naming the field."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from enforcer.config import LimitsConfig
from enforcer.errors import InvalidRequest
from enforcer.server.convert import struct_to_dict

LIMITS = LimitsConfig()


def to_struct(d):
    s = struct_pb2.Struct()
    s.update(d)
    return s


json_values = st.recursive(
    st.none() | st.booleans() | st.text(max_size=10) | st.floats(allow_nan=False, allow_infinity=False),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=15,
)


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=4))
def test_round_trips_json_values(d):
    back = struct_to_dict(to_struct(d), LIMITS, "call.args")
    # Whole numbers come back as ints (-0.0 as 0), which compare equal as JSON values.
    assert back == d


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_with_their_path(bad):
    with pytest.raises(InvalidRequest) as err:
        struct_to_dict(to_struct({"a": {"b": [1, bad]}}), LIMITS, "call.args")
    assert err.value.field == "call.args.a.b[1]"


def test_depth_limit():
    d = {"leaf": 1}
    for _ in range(LIMITS.max_args_depth - 1):
        d = {"n": d}
    struct_to_dict(to_struct(d), LIMITS, "call.args")  # exactly at the limit
    with pytest.raises(InvalidRequest, match="nested deeper"):
        struct_to_dict(to_struct({"n": d}), LIMITS, "call.args")


def test_size_limit():
    with pytest.raises(InvalidRequest) as err:
        struct_to_dict(to_struct({"x": "a" * (LIMITS.max_args_bytes + 1)}), LIMITS, "call.args")
    assert err.value.field == "call.args"


def test_whole_numbers_come_back_as_ints():
    assert struct_to_dict(to_struct({"amount": 100000}), LIMITS, "call.args") == {"amount": 100000}
    assert isinstance(struct_to_dict(to_struct({"amount": 100000}), LIMITS, "call.args")["amount"], int)


@pytest.mark.parametrize("n", [2.0**53, -(2.0**53), 1e300])
def test_numbers_beyond_the_safe_integer_range_stay_floats_and_canonicalise(n):
    from enforcer.audit.canonical import canonical_json

    value = struct_to_dict(to_struct({"n": n}), LIMITS, "call.args")["n"]
    assert isinstance(value, float)
    canonical_json({"n": value})
