"""`{{name}}`: a wasmgate network plugin (CNI), a Wasm component of `{{world_id}}`.

The host (or the stock `wasmtime run -S keyvalue -S config`) calls one method of `Network` per
CNI command, each in a fresh instance, so anything that must last goes in `wasi:keyvalue`. The
plugin never touches netlink: ADD answers with a plan (an `Attachment`) that the host checks
against the call and its grant, then builds. A failure is raised as `Err(CniError(...))`, which
componentize-py turns into the `err` case of the export's result; any other exception traps.

What it does, as `wasmgate plugin new` wrote it:
- ADD: a veth pair, `wg` + 12 hex digits on the host and `CNI_IFNAME` in the pod, no bridge; the
  pod's address is `IP` from `CNI_ARGS` (e.g. `IP=10.240.0.5/24`), none without it. Real IPAM
  keeps its allocations in `wasi:keyvalue` (see wasmgate's `plugins/python/bridge-ipam`);
- DEL: nothing to free (the host removes the veth it built); it must succeed when there is
  nothing to do;
- CHECK: the same plan, for the host to find in the kernel;
- STATUS: ready; GC: nothing to release.
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional

import wit_world.exports
from componentize_py_types import Err
from wit_world.imports.cni_types import (
    AddOutcome,
    Attachment,
    AttachmentRef,
    CniError,
    CniInterface,
    CniResult,
    Invocation,
    IpConfig,
    NetConf,
    Veth,
)

#: The cniVersions this plugin speaks; the host refuses a call in any other with code 1.
VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

#: CNI error code 4: a necessary environment variable (here `CNI_ARGS`) is invalid.
INVALID_ENV = 4


class Network(wit_world.exports.Network):
    """The exported `wasmgate:plugin/network` interface."""

    def versions(self) -> List[str]:
        return list(VERSIONS)

    def add(self, conf: NetConf, call: Invocation) -> AddOutcome:
        plan = attachment(call)
        return AddOutcome(result=result(call, plan), attachment=plan)

    def del_(self, conf: NetConf, call: Invocation) -> None:
        pass

    def check(self, conf: NetConf, call: Invocation) -> Optional[Attachment]:
        return attachment(call)

    def status(self, conf: NetConf) -> None:
        pass

    def gc(self, conf: NetConf, valid: List[AttachmentRef]) -> List[AttachmentRef]:
        return []


def attachment(call: Invocation) -> Attachment:
    """The plan for this call. It depends on the call alone, so CHECK rebuilds what ADD asked for."""
    address = pod_address(call)
    return Attachment(
        veth=Veth(
            host_name=host_veth_name(call.container_id, call.ifname),
            mtu=None,
            host_addresses=[],
        ),
        bridge=None,
        container_addresses=[] if address is None else [address],
        container_routes=[],
        host_routes=[],
    )


def result(call: Invocation, plan: Attachment) -> CniResult:
    """The CNI result the runtime gets; the host fills in the MACs once it has built the veth."""
    return CniResult(
        interfaces=[
            CniInterface(name=plan.veth.host_name, mac=None, mtu=None, sandbox=None),
            CniInterface(name=call.ifname, mac=None, mtu=None, sandbox=call.netns),
        ],
        # iface 1: the pod's interface, the second of `interfaces`.
        ips=[IpConfig(address=a, gateway=None, iface=1) for a in plan.container_addresses],
        routes=[],
        dns=None,
    )


def pod_address(call: Invocation) -> Optional[str]:
    """`IP` from `CNI_ARGS`: an address with its prefix length."""
    ip = next((v for k, v in call.args if k == "IP"), None)
    if ip is None:
        return None
    addr, _, length = ip.partition("/")
    try:
        parsed = ipaddress.ip_address(addr) if "%" not in addr else None
    except ValueError:
        parsed = None
    if parsed is None or not (length.isascii() and length.isdigit()) or int(length) > parsed.max_prefixlen:
        raise Err(
            CniError(
                code=INVALID_ENV,
                msg=f'CNI_ARGS IP "{ip}" is not an address with a prefix length, e.g. 10.240.0.5/24',
                details="",
            )
        )
    return ip


def host_veth_name(container_id: str, ifname: str) -> str:
    """The host end's name: DEL and CHECK run in fresh instances with no memory of the ADD, so it
    is derived from the call: `wg` (the daemon's default `host_prefix`) + 12 hex digits of
    FNV-1a-64 over `<container-id>/<ifname>`, 14 bytes, within Linux's 15."""
    h = 0xCBF29CE484222325
    for b in f"{container_id}/{ifname}".encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"wg{h >> 16:012x}"
