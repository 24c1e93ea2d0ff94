"""What ADD returns: the attachment the host builds, and the CNI result it reports.

Both are pure functions of the config and the allocation, so CHECK rebuilds exactly what ADD
returned without any state beyond the address.
"""

from __future__ import annotations

from typing import List, Optional

from wit_world.imports.cni_types import (
    Attachment,
    Bridge,
    CniInterface,
    CniResult,
    IpConfig,
    Route,
    Veth,
)

from .config import Config, Mode
from .names import host_veth_name
from .prev import PrevResult
from .rust import format_ipv4


def _route(dst: str, gw: Optional[int]) -> Route:
    return Route(
        dst=dst,
        gw=None if gw is None else format_ipv4(gw),
        mtu=None,
        priority=None,
        table=None,
        scope=None,
    )


def _default_route(config: Config) -> Route:
    return _route("0.0.0.0/0", config.pool.gateway)


def attachment(config: Config, ip: int, cid: str, ifname: str) -> Attachment:
    """The plan for one container interface."""
    gw = format_ipv4(config.pool.gateway)
    prefix = config.pool.prefix
    bridge: Optional[Bridge] = None
    host_addresses: List[str] = []
    host_routes: List[Route] = []
    if config.mode is Mode.BRIDGE:
        bridge = Bridge(name=config.bridge, addresses=[f"{gw}/{prefix}"], mtu=config.mtu)
    else:
        # The host end answers for the gateway, and the host routes the pod's /32 down the veth.
        host_addresses = [f"{gw}/32"]
        host_routes = [_route(f"{format_ipv4(ip)}/32", None)]
    return Attachment(
        veth=Veth(
            host_name=host_veth_name(cid, ifname),
            mtu=config.mtu,
            host_addresses=host_addresses,
        ),
        bridge=bridge,
        container_addresses=[f"{format_ipv4(ip)}/{prefix}"],
        container_routes=[_default_route(config)],
        host_routes=host_routes,
    )


def result(
    config: Config,
    ip: int,
    cid: str,
    ifname: str,
    netns: str,
    prev: Optional[PrevResult],
) -> CniResult:
    """The CNI result: the previous plugin's entries, then ours."""
    interfaces = prev.interfaces() if prev else []
    ips = prev.ips() if prev else []
    routes = prev.routes() if prev else []
    # Our container interface comes right after our host veth.
    container_index = len(interfaces) + 1
    interfaces.append(
        CniInterface(name=host_veth_name(cid, ifname), mac=None, mtu=config.mtu, sandbox=None)
    )
    interfaces.append(CniInterface(name=ifname, mac=None, mtu=config.mtu, sandbox=netns))
    ips.append(
        IpConfig(
            address=f"{format_ipv4(ip)}/{config.pool.prefix}",
            gateway=format_ipv4(config.pool.gateway),
            iface=container_index,
        )
    )
    routes.append(_default_route(config))
    dns = config.dns if config.dns is not None else (prev.dns() if prev else None)
    return CniResult(interfaces=interfaces, ips=ips, routes=routes, dns=dns)
