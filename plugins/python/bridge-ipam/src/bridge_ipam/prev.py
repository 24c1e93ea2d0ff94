"""`prevResult`: the result of the plugins before this one in a chain, in the 1.1.0 shape the
host converts it to.

ADD appends to it and CHECK looks for our address in it. Fields the WIT result has no room for
(`advmss` on routes, `socketPath` and `pciID` on interfaces) are dropped; unknown fields are
ignored, a wrong shape is code 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from wit_world.imports.cni_types import CniInterface, Dns, IpConfig, Route

from . import rust
from .errors import DECODE_FAILURE, err

_opt_string = rust.option(rust.string)
_opt_u32 = rust.option(rust.u32)

# The Rust plugin's serde structs, field for field (serde_json reads text in document order).
_INTERFACE = rust.Record(
    "PrevInterface",
    (
        rust.Field("name", rust.string, required=True),
        rust.Field("mac", _opt_string),
        rust.Field("mtu", _opt_u32),
        rust.Field("sandbox", _opt_string),
    ),
)
_IP = rust.Record(
    "PrevIp",
    (
        rust.Field("address", rust.string, required=True),
        rust.Field("gateway", _opt_string),
        rust.Field("interface", _opt_u32),
    ),
)
_ROUTE = rust.Record(
    "PrevRoute",
    (
        rust.Field("dst", rust.string, required=True),
        rust.Field("gw", _opt_string),
        rust.Field("mtu", _opt_u32),
        rust.Field("priority", _opt_u32),
        rust.Field("table", _opt_u32),
        rust.Field("scope", _opt_u32),
    ),
)
_DNS = rust.Record(
    "PrevDns",
    (
        rust.Field("nameservers", rust.seq(rust.string), list),
        rust.Field("domain", _opt_string),
        rust.Field("search", rust.seq(rust.string), list),
        rust.Field("options", rust.seq(rust.string), list),
    ),
    container_default=True,
)
_RESULT = rust.Record(
    "PrevResult",
    (
        rust.Field("interfaces", rust.seq(_INTERFACE), list),
        rust.Field("ips", rust.seq(_IP), list),
        rust.Field("routes", rust.seq(_ROUTE), list),
        rust.Field("dns", rust.option(_DNS)),
    ),
    container_default=True,
)


@dataclass(frozen=True)
class PrevResult:
    """The decoded fields, as plain dicts of the records above."""

    fields: Dict[str, Any]

    def has_address(self, ip: int) -> bool:
        """Whether any of the result's ips has this address, whatever its prefix length."""
        return any(
            rust.parse_ipv4(c["address"].partition("/")[0]) == ip for c in self.fields["ips"]
        )

    def interfaces(self) -> List[CniInterface]:
        return [
            CniInterface(name=i["name"], mac=i["mac"], mtu=i["mtu"], sandbox=i["sandbox"])
            for i in self.fields["interfaces"]
        ]

    def ips(self) -> List[IpConfig]:
        return [
            IpConfig(address=c["address"], gateway=c["gateway"], iface=c["interface"])
            for c in self.fields["ips"]
        ]

    def routes(self) -> List[Route]:
        return [
            Route(
                dst=r["dst"],
                gw=r["gw"],
                mtu=r["mtu"],
                priority=r["priority"],
                table=r["table"],
                scope=r["scope"],
            )
            for r in self.fields["routes"]
        ]

    def dns(self) -> Optional[Dns]:
        d = self.fields["dns"]
        if d is None:
            return None
        return Dns(
            nameservers=list(d["nameservers"]),
            domain=d["domain"],
            search=list(d["search"]),
            options=list(d["options"]),
        )


def parse(text: str) -> PrevResult:
    try:
        return PrevResult(_RESULT(rust.loads(text)))
    except (rust.JsonError, rust.SerdeError) as e:
        raise err(DECODE_FAILURE, f"prevResult: {e}")
