"""The plugin's own keys in the net-conf `raw` JSON, with defaults from `wasi:config`.

| key | default |
| --- | --- |
| `podcidr` | required, an IPv4 CIDR |
| `gateway` | the first host address of `podcidr` |
| `bridge` | `wasi:config` key `bridge`, else `wgbr0` |
| `mtu` | `wasi:config` key `mtu`, else 1500 |
| `mode` | `bridge` (or `ptp`) |
| `dns` | none; passed through to the result |

Errors are CNI code 6 when `raw` is not a JSON object and code 7 naming the key otherwise. Keys
are checked in the order above, as the Rust plugin checks them, so that a config with several
mistakes gets the same error from both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Optional, Protocol

from wit_world.imports.cni_types import Dns

from . import rust
from .errors import DECODE_FAILURE, err, invalid
from .pool import MAX_PREFIX, Pool, PoolError, parse_cidr

DEFAULT_BRIDGE = "wgbr0"
DEFAULT_MTU = 1500
#: The IPv4 minimum MTU (RFC 791) and the largest a netdev takes without jumbo oddities.
MTU_MIN, MTU_MAX = 68, 65535
MTU_HINT = "is not an integer between 68 and 65535"


class Settings(Protocol):
    """Operator defaults, `wasi:config/store` in the component. A missing key is `None`; a
    failing store raises a CNI error (code 5)."""

    def get(self, key: str) -> Optional[str]: ...


class Mode(enum.Enum):
    #: Host veth ends join a shared bridge that holds the gateway address.
    BRIDGE = "bridge"
    #: Each host veth end holds the gateway as a /32 and the host routes the pod's /32 to it.
    PTP = "ptp"


@dataclass(frozen=True)
class Config:
    pool: Pool
    bridge: str
    mtu: int
    mode: Mode
    dns: Optional[Dns]


#: The CNI `dns` object; every field optional, unknown fields refused. It is read from the
#: already decoded config, as serde's `from_value` reads it.
DNS_CONF = rust.Record(
    "DnsConf",
    (
        rust.Field("nameservers", rust.seq(rust.string), list),
        rust.Field("domain", rust.option(rust.string)),
        rust.Field("search", rust.seq(rust.string), list),
        rust.Field("options", rust.seq(rust.string), list),
    ),
    container_default=True,
    deny_unknown_fields=True,
    from_value=True,
)


def parse(raw: str, settings: Settings) -> Config:
    try:
        obj = rust.loads(raw)
    except rust.JsonError as e:
        raise err(DECODE_FAILURE, f"network configuration is not valid JSON: {e}")
    if not isinstance(obj, dict):
        raise err(DECODE_FAILURE, "network configuration is not a JSON object")

    podcidr = obj.get("podcidr")
    if podcidr is None:
        raise invalid("podcidr is required")
    if not isinstance(podcidr, str):
        raise invalid("podcidr must be a string")
    try:
        network, prefix = parse_cidr(podcidr)
    except PoolError as e:
        raise invalid(f"podcidr: {e}")

    gateway: Optional[int] = None
    gw_text = _string_key(obj, "gateway")
    if gw_text is not None:
        gateway = rust.parse_ipv4(gw_text)
        if gateway is None:
            raise invalid(f"gateway: {gw_text} is not an IPv4 address")
    try:
        pool = Pool.new(network, prefix, gateway)
    except PoolError as e:
        # Pool.new only rejects the gateway or the prefix; say which key is at fault.
        key = "gateway" if gateway is not None and prefix <= MAX_PREFIX else "podcidr"
        raise invalid(f"{key}: {e}")

    bridge = _string_key(obj, "bridge")
    if bridge is None:
        bridge = settings.get("bridge")
        if bridge is None:
            bridge = DEFAULT_BRIDGE
    problem = _ifname_problem(bridge)
    if problem is not None:
        raise invalid(f"bridge: {problem}")

    mtu_value = obj.get("mtu")
    if mtu_value is None:
        from_settings = settings.get("mtu")
        if from_settings is None:
            mtu = DEFAULT_MTU
        else:
            parsed = _checked_mtu(rust.parse_unsigned(rust.trim(from_settings), rust.U64_MAX))
            if parsed is None:
                raise invalid(
                    f"wasi:config key mtu: {rust.debug_str(from_settings)} {MTU_HINT}"
                )
            mtu = parsed
    else:
        parsed = _checked_mtu(rust.as_u64(mtu_value))
        if parsed is None:
            raise invalid(f"mtu: {rust.json_display(mtu_value)} {MTU_HINT}")
        mtu = parsed

    mode_text = _string_key(obj, "mode")
    if mode_text is None or mode_text == "bridge":
        mode = Mode.BRIDGE
    elif mode_text == "ptp":
        mode = Mode.PTP
    else:
        raise invalid(f'mode: {rust.debug_str(mode_text)} is not one of "bridge", "ptp"')

    dns: Optional[Dns] = None
    dns_value = obj.get("dns")
    if dns_value is not None:
        try:
            d = DNS_CONF(dns_value)
        except rust.SerdeError as e:
            raise invalid(f"dns: {e}")
        dns = Dns(
            nameservers=d["nameservers"],
            domain=d["domain"],
            search=d["search"],
            options=d["options"],
        )

    return Config(pool=pool, bridge=bridge, mtu=mtu, mode=mode, dns=dns)


def _checked_mtu(mtu: Optional[int]) -> Optional[int]:
    return mtu if mtu is not None and MTU_MIN <= mtu <= MTU_MAX else None


def _string_key(obj: Dict[str, rust.Json], key: str) -> Optional[str]:
    """An optional string key: absent and null are `None`, any other non-string is an error."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise invalid(f"{key} must be a string")


def _ifname_problem(name: str) -> Optional[str]:
    """Linux's `dev_valid_name`: 1-15 bytes, not `.` or `..`, no `/`, `:` or whitespace."""
    if not 1 <= len(name.encode()) <= 15:
        return f"{rust.debug_str(name)} must be 1 to 15 bytes long"
    if name in (".", ".."):
        return f"{rust.debug_str(name)} is not a valid interface name"
    if any(c in "/:" or rust.is_whitespace(c) for c in name):
        return f"{rust.debug_str(name)} must not contain '/', ':' or whitespace"
    return None
