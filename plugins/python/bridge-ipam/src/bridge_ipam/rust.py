"""The Rust std and serde behaviours that the Rust plugin's answers depend on.

The two plugins must answer the same inputs alike, errors included. Python's own tools differ
from Rust's in small ways that show up in those answers: `ipaddress` and `int()` accept inputs
that `str::parse` refuses (spaces, `_`, Unicode digits), `repr()` quotes strings unlike `{:?}`,
and `json` reads `NaN` and numbers of any size. This module reproduces the Rust side:

- `parse_ipv4` / `parse_unsigned`: `str::parse::<Ipv4Addr>()` and `str::parse::<u64>()` (and
  `u8`), `trim`: `str::trim`;
- `debug_str`: `format!("{:?}", s)`;
- `loads`: `serde_json::from_str::<Value>` (numbers as u64/i64/f64, no NaN or infinity);
- `json_display`: `serde_json::Value`'s `Display` (compact, keys sorted as in its `BTreeMap`);
- `Record` and friends: what `#[derive(Deserialize)]` says when a value has the wrong shape.

What is not reproduced is listed in the README (`Differences from the Rust plugin`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

try:  # Only to recognise combining marks, which `{:?}` escapes; absent is tolerable.
    import unicodedata
except ImportError:  # pragma: no cover
    unicodedata = None  # type: ignore[assignment]

#: A decoded JSON value: None, bool, int, float, str, list or dict.
Json = Any

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
I64_MIN = -(1 << 63)

# ---- str::parse ------------------------------------------------------------------------------

_DIGITS = frozenset("0123456789")

#: Unicode White_Space, which is what `char::is_whitespace` and `str::trim` use. Python's
#: `str.isspace` also counts U+001C..U+001F, which Rust does not.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WHITESPACE_STR = "".join(sorted(WHITESPACE))


def is_whitespace(c: str) -> bool:
    return c in WHITESPACE


def trim(s: str) -> str:
    """`str::trim`."""
    return s.strip(_WHITESPACE_STR)


def parse_unsigned(s: str, maximum: int) -> Optional[int]:
    """`str::parse::<u8/u64>()`: an optional `+`, then ASCII digits only, within `maximum`."""
    body = s[1:] if s.startswith("+") else s
    if not body or any(c not in _DIGITS for c in body):
        return None
    value = int(body)
    return value if value <= maximum else None


def parse_ipv4(s: str) -> Optional[int]:
    """`str::parse::<Ipv4Addr>()`: four decimal octets, no leading zeros, nothing else."""
    if len(s.encode()) > 15:
        return None
    parts = s.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not 1 <= len(part) <= 3 or any(c not in _DIGITS for c in part):
            return None
        if len(part) > 1 and part[0] == "0":
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


def format_ipv4(ip: int) -> str:
    """`Ipv4Addr`'s `Display`."""
    return f"{ip >> 24 & 255}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}"


# ---- {:?} ----------------------------------------------------------------------------------

_DEBUG_ESCAPES = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}


def _escaped_by_debug(c: str) -> bool:
    """Rust's `char::escape_debug` escapes what is not printable, and grapheme extenders."""
    if not c.isprintable():
        return True
    return unicodedata is not None and unicodedata.category(c) in ("Mn", "Me")


def debug_str(s: str) -> str:
    """`format!("{:?}", s)` for a `&str`."""
    out = ['"']
    for c in s:
        if c in _DEBUG_ESCAPES:
            out.append(_DEBUG_ESCAPES[c])
        elif _escaped_by_debug(c):
            out.append(f"\\u{{{ord(c):x}}}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


# ---- serde_json ----------------------------------------------------------------------------


class JsonError(ValueError):
    """Text that `serde_json::from_str` refuses."""


def loads(text: str) -> Json:
    """`serde_json::from_str::<Value>`: the same values, refused where serde_json refuses.

    Integers keep serde_json's model: within i64/u64 they are integers, beyond that f64; `-0` is
    the float -0.0. `NaN`, `Infinity` and numbers too big for an f64 are errors.
    """

    def parse_int(s: str) -> Union[int, float]:
        n = int(s)
        if n == 0 and s.startswith("-"):
            return -0.0
        if I64_MIN <= n <= U64_MAX:
            return n
        return parse_float(s)

    def parse_float(s: str) -> float:
        f = float(s)
        if math.isinf(f):
            raise JsonError("number out of range")
        return f

    def parse_constant(s: str) -> Json:
        raise JsonError("expected value")

    try:
        return json.loads(
            text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant
        )
    except json.JSONDecodeError as e:
        # Python's wording, serde_json's form ("... at line L column C").
        raise JsonError(f"{e.msg[:1].lower()}{e.msg[1:]} at line {e.lineno} column {e.colno}")
    except JsonError:
        raise
    except ValueError as e:  # e.g. an integer with more digits than int() takes
        raise JsonError(str(e))


def _shortest_digits(f: float) -> Tuple[str, int]:
    """(digits, k): abs(f) == int(digits) * 10**k, digits the shortest that round-trip.

    `repr` gives the same shortest digits as Rust's formatters; only their layout differs.
    """
    mantissa, _, exp = repr(abs(f)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = (int(exp) if exp else 0) - len(frac)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    return (stripped, k) if stripped else ("0", 0)


def _sign(f: float) -> str:
    return "-" if math.copysign(1.0, f) < 0 else ""


def json_float(f: float) -> str:
    """How serde_json writes an f64 (its `zmij` formatter): plain for decimal exponents
    -5..=15, else `d.ddde±XX`. Python's `repr` is the same except that it switches to the
    exponent form at -5 already."""
    digits, k = _shortest_digits(f)
    exp10 = len(digits) + k - 1
    if exp10 == -5:
        return f"{_sign(f)}0.0000{digits}"
    return repr(f)


def rust_float(f: float) -> str:
    """`format!("{}", f)` for an f64 as serde prints it in errors: never an exponent, and a
    `.0` added when there is no decimal point."""
    digits, k = _shortest_digits(f)
    point = len(digits) + k
    if k >= 0:
        body = digits + "0" * k + ".0"
    elif point > 0:
        body = digits[:point] + "." + digits[point:]
    else:
        body = "0." + "0" * -point + digits
    return _sign(f) + body


def json_display(v: Json) -> str:
    """`serde_json::Value`'s `Display`: compact JSON, object keys in sorted order."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return json_float(v)
    if isinstance(v, str):
        # serde_json escapes exactly what json.dumps does with ensure_ascii off.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(json_display(x) for x in v) + "]"
    return "{" + ",".join(f"{json_display(k)}:{json_display(v[k])}" for k in sorted(v)) + "}"


def as_u64(v: Json) -> Optional[int]:
    """`Value::as_u64`: a non-negative JSON integer (never a bool or a float)."""
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U64_MAX:
        return v
    return None


# ---- #[derive(Deserialize)] ------------------------------------------------------------------


class SerdeError(ValueError):
    """A value of the wrong shape, worded as serde words it."""


def unexpected(v: Json) -> str:
    """serde's `Unexpected` for a JSON value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{'true' if v else 'false'}`"
    if isinstance(v, int):
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{rust_float(v)}`"
    if isinstance(v, str):
        return f"string {debug_str(v)}"
    if isinstance(v, list):
        return "sequence"
    return "map"


def invalid_type(v: Json, expected: str) -> SerdeError:
    return SerdeError(f"invalid type: {unexpected(v)}, expected {expected}")


#: Reads one field's value, raising `SerdeError` on a wrong shape.
Reader = Callable[[Json], Any]


def string(v: Json) -> str:
    if isinstance(v, str):
        return v
    raise invalid_type(v, "a string")


def u32(v: Json) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if 0 <= v <= U32_MAX:
            return v
        raise SerdeError(f"invalid value: integer `{v}`, expected u32")
    raise invalid_type(v, "u32")


def option(inner: Reader) -> Reader:
    """`Option<T>`: null is none."""
    return lambda v: None if v is None else inner(v)


def seq(inner: Reader) -> Reader:
    """`Vec<T>`: the first bad element is the error."""

    def read(v: Json) -> List[Any]:
        if not isinstance(v, list):
            raise invalid_type(v, "a sequence")
        return [inner(x) for x in v]

    return read


@dataclass(frozen=True)
class Field:
    name: str
    read: Reader
    #: The value when the field is missing; `None` with `required` means serde's "missing field".
    default: Callable[[], Any] = lambda: None
    required: bool = False


@dataclass(frozen=True)
class Record:
    """A `#[derive(Deserialize)]` struct: its name, its fields in declaration order, and its
    `#[serde(default)]` / `#[serde(deny_unknown_fields)]` attributes."""

    name: str
    fields: Tuple[Field, ...]
    container_default: bool = False
    deny_unknown_fields: bool = False
    #: serde_json visits a `Value`'s object keys in sorted order (its map is a BTreeMap), and
    #: text in document order.
    from_value: bool = False

    def __call__(self, v: Json) -> Dict[str, Any]:
        if isinstance(v, dict):
            return self._from_map(v)
        if isinstance(v, list):
            return self._from_seq(v)
        raise invalid_type(v, f"struct {self.name}")

    def _from_map(self, obj: Dict[str, Json]) -> Dict[str, Any]:
        known = {f.name: f for f in self.fields}
        out: Dict[str, Any] = {}
        for key in sorted(obj) if self.from_value else obj:
            field = known.get(key)
            if field is not None:
                out[key] = field.read(obj[key])
            elif self.deny_unknown_fields:
                raise SerdeError(f"unknown field `{key}`, {self._expected_fields()}")
        for f in self.fields:
            if f.name not in out:
                if f.required and not self.container_default:
                    raise SerdeError(f"missing field `{f.name}`")
                out[f.name] = f.default()
        return out

    def _from_seq(self, items: List[Json]) -> Dict[str, Any]:
        # serde also accepts a struct written as an array of its fields, in order.
        out: Dict[str, Any] = {}
        for i, f in enumerate(self.fields):
            if i < len(items):
                out[f.name] = f.read(items[i])
            elif self.container_default:
                out[f.name] = f.default()
            else:
                raise SerdeError(
                    f"invalid length {i}, expected struct {self.name} with "
                    f"{len(self.fields)} elements"
                )
        if len(items) > len(self.fields):
            if self.from_value:
                raise SerdeError(
                    f"invalid length {len(items)}, expected fewer elements in array"
                )
            raise SerdeError("trailing characters")
        return out

    def _expected_fields(self) -> str:
        names = [f"`{f.name}`" for f in self.fields]
        if len(names) == 1:
            return f"expected {names[0]}"
        if len(names) == 2:
            return f"expected {names[0]} or {names[1]}"
        return "expected one of " + ", ".join(names)
