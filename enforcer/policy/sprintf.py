"""OPA's `sprintf` for the embedded engine, exactly as OPA formats.

OPA compiles `sprintf` into a WebAssembly module as an import: the host
implements it. OPA's own implementation (topdown, `builtinSprintf`) converts
each element of the argument array to a Go value and calls Go's
`fmt.Sprintf`:

- a number becomes a Go `int` when its text parses as a 64-bit integer, else
  a `*big.Int` when it is an integer literal, else a `float64` when it parses
  as a finite one, else its text as a string;
- a string stays a string;
- anything else (booleans, null, arrays, objects, sets) becomes its Rego
  text, as a string: `true`, `null`, `["a", 1]`, `{"k": 1}` (keys sorted),
  `{1, 2}` and `set()`, strings inside quoted as Go's strconv.Quote does.

So `%t` of `true` prints `%!t(string=true)` under OPA, and so here. This
module is a port of the parts of Go's fmt and strconv that those four types
reach: every verb (`%v %s %d %q %f %e %g %x %X %o %O %b %c %U %t %T ...`),
flags `+ - # 0 space`, width and precision (also `*`), explicit argument
indexes (`%[2]s`), and Go's error forms (`%!d(string=x)`, `%!s(MISSING)`,
`%!(EXTRA int=2)`, `%!(BADWIDTH)`, `%!v(BADINDEX)`, `%!(NOVERB)`).
`tests/policy/test_sprintf.py` checks it against `opa eval` on a table.

Values arrive from the module in OPA's Rego serialisation (`opa_value_dump`),
parsed by `parse_rego_value`, which keeps each number's text as OPA does.
Known difference, not in this module: a number the policy *computes* (say
10 / 3) carries fewer digits under WebAssembly than under OPA's interpreter,
which shows only when such a value is printed inside an array or object.
"""

from __future__ import annotations

import json
import math
import re
import struct
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# -- Rego values as the WebAssembly module serialises them ----------------------


@dataclass(frozen=True)
class Number:
    """A Rego number, by its text (OPA keeps the text of every number)."""

    text: str


@dataclass(frozen=True)
class Set:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Object:
    items: tuple[tuple[Any, Any], ...]  # key, value; keys may be any value


class RegoValueError(ValueError):
    pass


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WS = " \t\n\r"


def _json_object(pairs: list[tuple[str, Any]]) -> Object:
    return Object(tuple(pairs))


def parse_rego_value(text: str) -> Any:
    """Parse OPA's Rego serialisation of a value (JSON plus sets: `{1, 2}`,
    `set()`, and objects with keys of any type)."""
    if "set()" not in text:
        try:  # most values are plain JSON: the C scanner reads them
            return json.loads(text, parse_int=Number, parse_float=Number, object_pairs_hook=_json_object,
                              parse_constant=_no_constant)
        except ValueError:
            pass
    value, i = _parse(text, _skip(text, 0))
    if _skip(text, i) != len(text):
        raise RegoValueError(f"trailing text at offset {i}")
    return value


def _skip(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


_decoder = json.JSONDecoder()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a Rego value")


def _parse(s: str, i: int) -> tuple[Any, int]:
    if i >= len(s):
        raise RegoValueError("unexpected end of value")
    c = s[i]
    if c == '"':
        try:
            value, end = _decoder.raw_decode(s, i)
        except ValueError as e:
            raise RegoValueError(f"bad string at offset {i}: {e}") from None
        return value, end
    if c == "[":
        items, i = _sequence(s, i + 1, "]")
        return items, i
    if c == "{":
        return _braces(s, i + 1)
    if s.startswith("set()", i):
        return Set(()), i + 5
    for word, value in (("true", True), ("false", False), ("null", None)):
        if s.startswith(word, i):
            return value, i + len(word)
    m = _NUMBER.match(s, i)
    if m:
        return Number(m.group(0)), m.end()
    raise RegoValueError(f"unexpected {c!r} at offset {i}")


def _sequence(s: str, i: int, close: str) -> tuple[list[Any], int]:
    items: list[Any] = []
    i = _skip(s, i)
    if i < len(s) and s[i] == close:
        return items, i + 1
    while True:
        value, i = _parse(s, _skip(s, i))
        items.append(value)
        i = _skip(s, i)
        if i < len(s) and s[i] == ",":
            i += 1
        elif i < len(s) and s[i] == close:
            return items, i + 1
        else:
            raise RegoValueError(f"expected ',' or {close!r} at offset {i}")


def _braces(s: str, i: int) -> tuple[Any, int]:
    i = _skip(s, i)
    if i < len(s) and s[i] == "}":
        return Object(()), i + 1
    first, i = _parse(s, i)
    i = _skip(s, i)
    if i < len(s) and s[i] == ":":  # an object
        pairs: list[tuple[Any, Any]] = []
        key = first
        while True:
            value, i = _parse(s, _skip(s, i + 1))
            pairs.append((key, value))
            i = _skip(s, i)
            if i < len(s) and s[i] == "}":
                return Object(tuple(pairs)), i + 1
            if i >= len(s) or s[i] != ",":
                raise RegoValueError(f"expected ',' or '}}' at offset {i}")
            key, i = _parse(s, _skip(s, i + 1))
            i = _skip(s, i)
            if i >= len(s) or s[i] != ":":
                raise RegoValueError(f"expected ':' at offset {i}")
    items = [first]
    while True:  # a set
        if i < len(s) and s[i] == "}":
            return Set(tuple(items)), i + 1
        if i >= len(s) or s[i] != ",":
            raise RegoValueError(f"expected ',' or '}}' at offset {i}")
        value, i = _parse(s, _skip(s, i + 1))
        items.append(value)
        i = _skip(s, i)


# -- Rego's order and text (ast.Compare, Term.String) ----------------------------

_RANK = {type(None): 0, bool: 1, Number: 2, str: 3, list: 6, Object: 7, Set: 8}


def _rank(v: Any) -> int:
    return _RANK[type(v)]


def compare(a: Any, b: Any) -> int:
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if a is None:
        return 0
    if isinstance(a, bool):
        return (a > b) - (a < b)
    if isinstance(a, Number):
        x, y = Decimal(a.text), Decimal(b.text)
        return (x > y) - (x < y)
    if isinstance(a, str):
        return (a > b) - (a < b)  # code point order is UTF-8 byte order, as Go compares
    if isinstance(a, list):
        return _compare_seq(a, b)
    if isinstance(a, Set):
        return _compare_seq(_sorted(a.items), _sorted(b.items))
    ka, kb = _sorted_pairs(a), _sorted_pairs(b)
    for (k1, v1), (k2, v2) in zip(ka, kb, strict=False):
        c = compare(k1, k2) or compare(v1, v2)
        if c:
            return c
    return (len(ka) > len(kb)) - (len(ka) < len(kb))


def _compare_seq(a: list[Any], b: list[Any]) -> int:
    for x, y in zip(a, b, strict=False):
        c = compare(x, y)
        if c:
            return c
    return (len(a) > len(b)) - (len(a) < len(b))


class _Key:
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Key) -> bool:
        return compare(self.v, other.v) < 0


def _sorted(items: tuple[Any, ...] | list[Any]) -> list[Any]:
    return sorted(items, key=_Key)


def _sorted_pairs(obj: Object) -> list[tuple[Any, Any]]:
    return sorted(obj.items, key=lambda kv: _Key(kv[0]))


def rego_text(v: Any) -> str:
    """A value as OPA prints a term (ast.Term.String)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, Number):
        return v.text
    if isinstance(v, str):
        return go_quote(v)
    if isinstance(v, list):
        return "[" + ", ".join(rego_text(x) for x in v) + "]"
    if isinstance(v, Set):
        if not v.items:
            return "set()"
        return "{" + ", ".join(rego_text(x) for x in _sorted(v.items)) + "}"
    if isinstance(v, Object):
        return "{" + ", ".join(f"{rego_text(k)}: {rego_text(x)}" for k, x in _sorted_pairs(v)) + "}"
    raise TypeError(f"not a Rego value: {v!r}")


# -- the Go values sprintf's arguments become -----------------------------------


@dataclass(frozen=True)
class BigInt:
    """A Go *big.Int: an integer literal outside int64."""

    value: int


_INT64 = (-(1 << 63), (1 << 63) - 1)
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def go_arg(v: Any) -> Any:
    """The Go value OPA's sprintf passes to fmt.Sprintf for one element."""
    if isinstance(v, Number):
        text = v.text
        if _GO_INT.fullmatch(text):
            n = int(text)
            return n if _INT64[0] <= n <= _INT64[1] else BigInt(n)
        if _GO_FLOAT.fullmatch(text):
            f = float(text)
            if not math.isinf(f):
                return f
        return text
    if isinstance(v, str):
        return v
    return rego_text(v)


def opa_sprintf(fmt_value: Any, args_value: Any) -> str:
    """sprintf(format, values) with Rego values as parse_rego_value gives them."""
    if not isinstance(fmt_value, str):
        raise TypeError("sprintf: operand 1 must be a string")
    if not isinstance(args_value, list):
        raise TypeError("sprintf: operand 2 must be an array")
    return go_sprintf(fmt_value, [go_arg(v) for v in args_value])


# -- strconv -----------------------------------------------------------------------


def _is_print(ch: str) -> bool:
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def go_quote(s: str, *, ascii_only: bool = False, quote: str = '"') -> str:
    """strconv.Quote (QuoteToASCII with ascii_only; QuoteRune with quote="'")."""
    out = [quote]
    for ch in s:
        r = ord(ch)
        if ch == quote or ch == "\\":
            out.append("\\" + ch)
        elif (not ascii_only or r < 0x80) and _is_print(ch) and not 0xD800 <= r <= 0xDFFF:
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif r < 0x20 or r == 0x7F:
            out.append(f"\\x{r:02x}")
        elif 0xD800 <= r <= 0xDFFF or r > 0x10FFFF:
            out.append("\\ufffd")
        elif r < 0x10000:
            out.append(f"\\u{r:04x}")
        else:
            out.append(f"\\U{r:08x}")
    out.append(quote)
    return "".join(out)


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _can_backquote(s: str) -> bool:
    return all(not ((ord(c) < 0x20 and c != "\t") or c in "`\x7f\ufeff") for c in s)


def _shortest_digits(v: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip, and the decimal point's position."""
    if v == 0:
        return "", 0
    sign, digits, exp = Decimal(repr(abs(v))).as_tuple()
    d = "".join(map(str, digits)).rstrip("0")
    dp = len(digits) + exp
    return d, dp


def _rounded_digits(v: float, n: int) -> tuple[str, int]:
    """v rounded to n significant digits (round half to even on the exact value)."""
    if v == 0:
        return "", 0
    mant, _, exp = f"{abs(v):.{n - 1}e}".partition("e")
    d = mant.replace(".", "").rstrip("0")
    return d, int(exp) + 1


def _fmt_e(neg: bool, d: str, dp: int, prec: int, e: str) -> str:
    out = ["-" if neg else "", d[0] if d else "0"]
    if prec > 0:
        out.append(".")
        frac = d[1:prec + 1]
        out.append(frac + "0" * (prec - len(frac)))
    exp = 0 if not d else dp - 1
    out.append(e + ("-" if exp < 0 else "+") + f"{abs(exp):02d}")
    return "".join(out)


def _fmt_f(neg: bool, d: str, dp: int, prec: int) -> str:
    out = ["-" if neg else ""]
    if dp > 0:
        out.append(d[:dp] + "0" * max(0, dp - len(d)))
    else:
        out.append("0")
    if prec > 0:
        out.append(".")
        out.append("".join(d[j] if 0 <= (j := dp + i - 1) < len(d) else "0" for i in range(1, prec + 1)))
    return "".join(out)


def _float_bits(v: float) -> tuple[bool, int, int]:
    """sign, mantissa and binary exponent as strconv.genericFtoa sees them."""
    bits = struct.unpack(">Q", struct.pack(">d", v))[0]
    neg = bool(bits >> 63)
    exp = (bits >> 52) & 0x7FF
    mant = bits & ((1 << 52) - 1)
    if exp == 0:
        exp += 1
    else:
        mant |= 1 << 52
    return neg, mant, exp - 1023


def _fmt_x(v: float, prec: int, fmt: str) -> str:
    neg, mant, exp = _float_bits(v)
    if mant == 0:
        exp = 0
    mant <<= 60 - 52
    while mant != 0 and mant & (1 << 60) == 0:
        mant <<= 1
        exp -= 1
    if 0 <= prec < 15:
        shift = prec * 4
        extra = (mant << shift) & ((1 << 60) - 1)
        mant >>= 60 - shift
        if extra | (mant & 1) > 1 << 59:
            mant += 1
        mant <<= 60 - shift
        if mant & (1 << 61):
            mant >>= 1
            exp += 1
    digits = "0123456789abcdef" if fmt == "x" else "0123456789ABCDEF"
    out = ["-" if neg else "", "0", fmt, "01"[(mant >> 60) & 1]]
    mant = (mant << 4) & ((1 << 64) - 1)
    if prec < 0 and mant != 0:
        out.append(".")
        while mant != 0:
            out.append(digits[(mant >> 60) & 15])
            mant = (mant << 4) & ((1 << 64) - 1)
    elif prec > 0:
        out.append(".")
        for _ in range(prec):
            out.append(digits[(mant >> 60) & 15])
            mant = (mant << 4) & ((1 << 64) - 1)
    out.append("p" if fmt == "x" else "P")
    out.append("-" if exp < 0 else "+")
    out.append(f"{abs(exp):02d}")
    return "".join(out)


def format_float(v: float, fmt: str, prec: int) -> str:
    """strconv.FormatFloat(v, fmt, prec, 64)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    neg = math.copysign(1.0, v) < 0
    if fmt == "b":
        n, mant, exp = _float_bits(v)
        e = exp - 52
        return ("-" if n else "") + f"{mant}p" + ("-" if e < 0 else "+") + str(abs(e))
    if fmt in "xX":
        return _fmt_x(v, prec, fmt)
    if fmt in "fF":
        if prec < 0:
            d, dp = _shortest_digits(v)
            return _fmt_f(neg, d, dp, max(len(d) - dp, 0))
        return f"{v:.{prec}f}" if not (neg and v == 0) else "-" + f"{0.0:.{prec}f}"
    if fmt in "eE":
        if prec < 0:
            d, dp = _shortest_digits(v)
            return _fmt_e(neg, d, dp, max(len(d) - 1, 0), fmt)
        d, dp = _rounded_digits(v, prec + 1)
        return _fmt_e(neg, d, dp, prec, fmt)
    # g, G
    e = "e" if fmt == "g" else "E"
    shortest = prec < 0
    if shortest:
        d, dp = _shortest_digits(v)
        prec = len(d)
        eprec = 6
    else:
        if prec == 0:
            prec = 1
        d, dp = _rounded_digits(v, prec)
        eprec = prec
        if eprec > len(d) and len(d) >= dp:
            eprec = len(d)
    exp = dp - 1
    if exp < -4 or exp >= eprec:
        if prec > len(d):
            prec = len(d)
        return _fmt_e(neg, d, dp, prec - 1, e)
    if prec > dp:
        prec = len(d)
    return _fmt_f(neg, d, dp, max(prec - dp, 0))


# -- fmt ---------------------------------------------------------------------------


def _type_name(arg: Any) -> str:
    if isinstance(arg, bool):
        return "bool"
    if isinstance(arg, int):
        return "int"
    if isinstance(arg, float):
        return "float64"
    if isinstance(arg, BigInt):
        return "*big.Int"
    return "string"


class _Printer:
    def __init__(self) -> None:
        self.buf: list[str] = []
        self.clear()

    def clear(self) -> None:
        self.sharp = self.zero = self.plus = self.minus = self.space = False
        self.sharp_v = self.plus_v = False
        self.wid = self.prec = 0
        self.wid_present = self.prec_present = False

    # padding (fmt.pad, fmt.padString, fmt.writePadding)

    def padding(self, n: int) -> None:
        if n > 0:
            self.buf.append(("0" if self.zero else " ") * n)

    def pad(self, s: str) -> None:
        if not self.wid_present or self.wid == 0:
            self.buf.append(s)
            return
        width = self.wid - len(s)
        if not self.minus:
            self.padding(width)
            self.buf.append(s)
        else:
            self.buf.append(s)
            self.padding(width)

    # integers

    def fmt_integer(self, u: int, base: int, verb: str, upper: bool) -> None:
        digits = "0123456789ABCDEFX" if upper else "0123456789abcdefx"
        negative = u < 0
        u = abs(u)
        prec = 0
        if self.prec_present:
            prec = self.prec
            if prec == 0 and u == 0:
                old, self.zero = self.zero, False
                self.padding(self.wid)
                self.zero = old
                return
        elif self.zero and not self.minus and self.wid_present:
            prec = self.wid
            if negative or self.plus or self.space:
                prec -= 1
        s = ""
        while True:
            s = digits[u % base] + s
            u //= base
            if u == 0:
                break
        s = "0" * max(0, prec - len(s)) + s
        if self.sharp:
            if base == 2:
                s = "0b" + s
            elif base == 8:
                if s[0] != "0":
                    s = "0" + s
            elif base == 16:
                s = "0" + digits[16] + s
        if verb == "O":
            s = "0o" + s
        if negative:
            s = "-" + s
        elif self.plus:
            s = "+" + s
        elif self.space:
            s = " " + s
        old, self.zero = self.zero, False
        self.pad(s)
        self.zero = old

    def fmt_c(self, u: int) -> None:
        self.pad(chr(u) if 0 <= u <= 0x10FFFF and not 0xD800 <= u <= 0xDFFF else "\ufffd")

    def fmt_qc(self, u: int) -> None:
        ch = chr(u) if 0 <= u <= 0x10FFFF and not 0xD800 <= u <= 0xDFFF else "\ufffd"
        self.pad(go_quote(ch, ascii_only=self.plus, quote="'"))

    def fmt_unicode(self, u: int) -> None:
        if u < 0:
            u &= (1 << 64) - 1
        prec = self.prec if self.prec_present and self.prec > 4 else 4
        s = "U+" + f"{u:X}".rjust(prec, "0")
        if self.sharp and u <= 0x10FFFF and not 0xD800 <= u <= 0xDFFF and _is_print(chr(u)):
            s += " '" + chr(u) + "'"
        old, self.zero = self.zero, False
        self.pad(s)
        self.zero = old

    def print_int(self, v: int, verb: str) -> None:
        if verb in "vd":
            self.fmt_integer(v, 10, verb, False)
        elif verb == "b":
            self.fmt_integer(v, 2, verb, False)
        elif verb in "oO":
            self.fmt_integer(v, 8, verb, False)
        elif verb == "x":
            self.fmt_integer(v, 16, verb, False)
        elif verb == "X":
            self.fmt_integer(v, 16, verb, True)
        elif verb == "c":
            self.fmt_c(v)
        elif verb == "q":
            self.fmt_qc(v)
        elif verb == "U":
            self.fmt_unicode(v)
        else:
            self.bad_verb(v, verb)

    def print_big(self, x: BigInt, verb: str) -> None:
        """big.Int.Format."""
        base = {"b": 2, "o": 8, "O": 8, "d": 10, "s": 10, "v": 10, "x": 16, "X": 16}.get(verb)
        if base is None:
            self.buf.append(f"%!{verb}(big.Int={x.value})")
            return
        n = x.value
        sign = "-" if n < 0 else "+" if (self.plus or self.plus_v) else " " if self.space else ""
        prefix = ""
        if self.sharp or self.sharp_v:
            prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(verb, "")
        if verb == "O":
            prefix = "0o"
        digits = _to_base(abs(n), base)
        if verb == "X":
            digits = digits.upper()
        left = zeros = right = 0
        if self.prec_present:
            if len(digits) < self.prec:
                zeros = self.prec - len(digits)
            elif digits == "0" and self.prec == 0:
                return
        length = len(sign) + len(prefix) + zeros + len(digits)
        if self.wid_present and length < self.wid:
            d = self.wid - length
            if self.minus:
                right = d
            elif self.zero and not self.prec_present:
                zeros = d
            else:
                left = d
        self.buf.append(" " * left + sign + prefix + "0" * zeros + digits + " " * right)

    # floats

    def fmt_float(self, v: float, verb: str, prec: int) -> None:
        if self.prec_present:
            prec = self.prec
        num = format_float(v, verb, prec)
        if num[0] in "-+":
            sign, body = num[0], num[1:]
        else:
            sign, body = "+", num
        if self.space and sign == "+" and not self.plus:
            sign = " "
        if body[0] in "IN":  # Inf, NaN: no zero padding
            old, self.zero = self.zero, False
            if body[0] == "N" and not self.space and not self.plus:
                self.pad(body)
            else:
                self.pad(sign + body)
            self.zero = old
            return
        if self.sharp and verb != "b":
            digits = 0
            if verb in "vgGx":
                digits = 6 if prec == -1 else prec
            tail = ""
            has_point = False
            saw_nonzero = False
            i = 0
            while i < len(body):
                c = body[i]
                if c == ".":
                    has_point = True
                elif c in "pP":
                    tail, body = body[i:], body[:i]
                    break
                elif c in "eE" and verb not in "xX":
                    tail, body = body[i:], body[:i]
                    break
                else:
                    if c != "0":
                        saw_nonzero = True
                    if saw_nonzero:
                        digits -= 1
                i += 1
            if not has_point:
                if body == "0":
                    digits -= 1
                body += "."
            if digits > 0:
                body += "0" * digits
            body += tail
        num = sign + body
        if self.plus or sign != "+":
            if self.zero and not self.minus and self.wid_present and self.wid > len(num):
                self.buf.append(num[0])
                self.padding(self.wid - len(num))
                self.buf.append(num[1:])
                return
            self.pad(num)
            return
        self.pad(body)

    def print_float(self, v: float, verb: str) -> None:
        if verb == "v":
            self.fmt_float(v, "g", -1)
        elif verb in "bgGxX":
            self.fmt_float(v, verb, -1)
        elif verb in "feEF":
            self.fmt_float(v, "f" if verb == "F" else verb, 6)
        else:
            self.bad_verb(v, verb)

    # strings

    def truncate(self, s: str) -> str:
        if self.prec_present:
            return s[: self.prec]
        return s

    def fmt_sx(self, s: str, upper: bool) -> None:
        digits = "0123456789ABCDEFX" if upper else "0123456789abcdefx"
        b = s.encode("utf-8", "surrogatepass")
        length = len(b)
        if self.prec_present and self.prec < length:
            length = self.prec
        width = 2 * length
        if width > 0:
            if self.space:
                if self.sharp:
                    width *= 2
                width += length - 1
            elif self.sharp:
                width += 2
        else:
            if self.wid_present:
                self.padding(self.wid)
            return
        if self.wid_present and self.wid > width and not self.minus:
            self.padding(self.wid - width)
        out = []
        if self.sharp:
            out.append("0" + digits[16])
        for i in range(length):
            if self.space and i > 0:
                out.append(" ")
                if self.sharp:
                    out.append("0" + digits[16])
            out.append(digits[b[i] >> 4] + digits[b[i] & 0xF])
        self.buf.append("".join(out))
        if self.wid_present and self.wid > width and self.minus:
            self.padding(self.wid - width)

    def fmt_q(self, s: str) -> None:
        s = self.truncate(s)
        if self.sharp and _can_backquote(s):
            self.pad("`" + s + "`")
            return
        self.pad(go_quote(s, ascii_only=self.plus))

    def print_string(self, v: str, verb: str) -> None:
        if verb == "v":
            if self.sharp_v:
                self.fmt_q(v)
            else:
                self.pad(self.truncate(v))
        elif verb == "s":
            self.pad(self.truncate(v))
        elif verb == "x":
            self.fmt_sx(v, False)
        elif verb == "X":
            self.fmt_sx(v, True)
        elif verb == "q":
            self.fmt_q(v)
        else:
            self.bad_verb(v, verb)

    # dispatch

    def print_arg(self, arg: Any, verb: str) -> None:
        if verb == "T":
            self.pad(self.truncate(_type_name(arg)))
            return
        if verb == "p":
            self.bad_verb(arg, verb)
            return
        if isinstance(arg, BigInt):
            self.print_big(arg, verb)
        elif isinstance(arg, bool):  # never produced by go_arg; kept for completeness
            self.pad("true" if arg else "false") if verb in "tv" else self.bad_verb(arg, verb)
        elif isinstance(arg, int):
            self.print_int(arg, verb)
        elif isinstance(arg, float):
            self.print_float(arg, verb)
        else:
            self.print_string(arg, verb)

    def bad_verb(self, arg: Any, verb: str) -> None:
        self.buf.append(f"%!{verb}({_type_name(arg)}=")
        self.print_arg(arg, "v")
        self.buf.append(")")


def _to_base(n: int, base: int) -> str:
    if base == 10:
        return str(n)
    return {2: format(n, "b"), 8: format(n, "o"), 16: format(n, "x")}[base]


_TOO_LARGE = 1_000_000


def _parsenum(s: str, start: int, end: int) -> tuple[int, bool, int]:
    if start >= end:
        return 0, False, end
    num, isnum, i = 0, False, start
    while i < end and "0" <= s[i] <= "9":
        if num > _TOO_LARGE:
            return 0, False, end
        num = num * 10 + ord(s[i]) - 48
        isnum = True
        i += 1
    return num, isnum, i


_SIMPLE = re.compile(r"%([sdv])")


def _simple(fmt: str, args: list[Any]) -> str | None:
    """The common case quickly: only %s, %d and %v, no flags, one argument
    each, of a type the verb prints plainly. None when it is not that case."""
    parts = _SIMPLE.split(fmt)
    if len(parts) // 2 != len(args) or any("%" in parts[i] for i in range(0, len(parts), 2)):
        return None
    out = []
    for n, arg in enumerate(args):
        verb = parts[2 * n + 1]
        out.append(parts[2 * n])
        if isinstance(arg, str):
            if verb == "d":
                return None
            out.append(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            if verb == "s":
                return None
            out.append(str(arg))
        elif isinstance(arg, float) and verb == "v":
            out.append(format_float(arg, "g", -1))
        else:
            return None
    out.append(parts[-1])
    return "".join(out)


def go_sprintf(fmt: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf over Go ints (int within int64), BigInt, float and str."""
    fast = _simple(fmt, args)
    if fast is not None:
        return fast
    p = _Printer()
    end = len(fmt)
    arg_num = 0
    after_index = False
    reordered = False
    i = 0

    def arg_number(arg_num: int, i: int) -> tuple[int, int, bool, bool]:
        """(arg_num, i, found, good)"""
        nonlocal reordered
        if i >= end or fmt[i] != "[":
            return arg_num, i, False, True
        reordered = True
        # parseArgNumber
        rest = end - i
        if rest < 3:
            index, wid, ok = 0, 1, False
        else:
            index, wid, ok = 0, 1, False
            for j in range(i + 1, end):
                if fmt[j] == "]":
                    width, isnum, newi = _parsenum(fmt, i + 1, j)
                    if not isnum or newi != j:
                        index, wid, ok = 0, j - i + 1, False
                    else:
                        index, wid, ok = width - 1, j - i + 1, True
                    break
        if ok and 0 <= index < len(args):
            return index, i + wid, True, True
        return arg_num, i + wid, ok, False

    def int_from_arg(arg_num: int) -> tuple[int, bool, int]:
        if arg_num < len(args):
            a = args[arg_num]
            num, is_int = (a, True) if isinstance(a, int) and not isinstance(a, bool) else (0, False)
            if is_int and not -_TOO_LARGE <= num <= _TOO_LARGE:
                num, is_int = 0, False
            return num, is_int, arg_num + 1
        return 0, False, arg_num

    while i < end:
        good = True
        last = i
        while i < end and fmt[i] != "%":
            i += 1
        if i > last:
            p.buf.append(fmt[last:i])
        if i >= end:
            break
        i += 1
        p.clear()
        simple = False
        while i < end:
            c = fmt[i]
            if c == "#":
                p.sharp = True
            elif c == "0":
                p.zero = not p.minus
            elif c == "+":
                p.plus = True
            elif c == "-":
                p.minus = True
                p.zero = False
            elif c == " ":
                p.space = True
            else:
                if "a" <= c <= "z" and arg_num < len(args):
                    if c == "v":
                        p.sharp_v, p.sharp = p.sharp, False
                        p.plus_v, p.plus = p.plus, False
                    p.print_arg(args[arg_num], c)
                    arg_num += 1
                    i += 1
                    simple = True
                break
            i += 1
        if simple:
            continue

        arg_num, i, after_index, ok = arg_number(arg_num, i)
        good = good and ok

        if i < end and fmt[i] == "*":
            i += 1
            p.wid, p.wid_present, arg_num = int_from_arg(arg_num)
            if not p.wid_present:
                p.buf.append("%!(BADWIDTH)")
            if p.wid < 0:
                p.wid = -p.wid
                p.minus = True
                p.zero = False
            after_index = False
        else:
            p.wid, p.wid_present, i = _parsenum(fmt, i, end)
            if after_index and p.wid_present:
                good = False

        if i + 1 < end and fmt[i] == ".":
            i += 1
            if after_index:
                good = False
            arg_num, i, after_index, ok = arg_number(arg_num, i)
            good = good and ok
            if i < end and fmt[i] == "*":
                i += 1
                p.prec, p.prec_present, arg_num = int_from_arg(arg_num)
                if p.prec < 0:
                    p.prec, p.prec_present = 0, False
                if not p.prec_present:
                    p.buf.append("%!(BADPREC)")
                after_index = False
            else:
                p.prec, p.prec_present, i = _parsenum(fmt, i, end)
                if not p.prec_present:
                    p.prec, p.prec_present = 0, True

        if not after_index:
            arg_num, i, after_index, ok = arg_number(arg_num, i)
            good = good and ok

        if i >= end:
            p.buf.append("%!(NOVERB)")
            break

        verb = fmt[i]
        i += 1
        if verb == "%":
            p.buf.append("%")
        elif not good:
            p.buf.append(f"%!{verb}(BADINDEX)")
        elif arg_num >= len(args):
            p.buf.append(f"%!{verb}(MISSING)")
        else:
            if verb == "v":
                p.sharp_v, p.sharp = p.sharp, False
                p.plus_v, p.plus = p.plus, False
            p.print_arg(args[arg_num], verb)
            arg_num += 1

    if not reordered and arg_num < len(args):
        p.clear()
        p.buf.append("%!(EXTRA ")
        for n, arg in enumerate(args[arg_num:]):
            if n:
                p.buf.append(", ")
            p.buf.append(_type_name(arg) + "=")
            p.print_arg(arg, "v")
        p.buf.append(")")
    return "".join(p.buf)
