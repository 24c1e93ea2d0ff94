"""The CNI commands, as pure logic over `Kv` and `Settings`.

`app.py` calls these with the real `wasi:keyvalue` bucket and `wasi:config` store; the tests in
`tests/` call them with in-memory fakes. Each raises `errors.CniFailure` (componentize-py's
`Err`) for a CNI error and never anything else: an unexpected exception would trap the instance,
which the host reports as code 999, where the Rust plugin would have answered.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Set, Tuple

from wit_world.imports.cni_types import (
    AddOutcome,
    Attachment,
    AttachmentRef,
    CniError,
    Invocation,
    NetConf,
)

from . import config as configmod
from . import plan, prev, rust
from .errors import (
    ALREADY_EXISTS,
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    NOT_AVAILABLE,
    CniFailure,
    err,
    invalid,
)
from .ipam import Ipam, Kv

VERSIONS: Tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def versions() -> List[str]:
    return list(VERSIONS)


def _preflight(conf: NetConf) -> None:
    """The checks every command makes: a cniVersion we speak, and a name usable as a key
    prefix."""
    if conf.cni_version not in VERSIONS:
        raise CniFailure(
            CniError(
                code=INCOMPATIBLE_VERSION,
                msg=f"cniVersion {rust.debug_str(conf.cni_version)} is not supported",
                details=f"supported versions: {', '.join(VERSIONS)}",
            )
        )
    # State keys are "<name>/...": a '/' in the name could alias another network's keys.
    if not conf.name or "/" in conf.name:
        raise invalid(f"name {rust.debug_str(conf.name)} must be non-empty and contain no '/'")


def add(
    conf: NetConf, call: Invocation, kv: Kv, settings: configmod.Settings
) -> AddOutcome:
    _preflight(conf)
    config = configmod.parse(conf.raw, settings)
    # Decode everything before allocating, so a bad prevResult does not leak an address.
    previous = prev.parse(conf.prev_result) if conf.prev_result is not None else None
    ipam = Ipam(kv, conf.name)
    cid, ifname = call.container_id, call.ifname
    if ipam.exists(cid, ifname):
        raise err(ALREADY_EXISTS, f"attachment {cid}/{ifname} already exists")
    wanted = _requested_ip(conf, call)
    if wanted is not None:
        ip = ipam.allocate_exact(config.pool, wanted, cid, ifname)
    else:
        ip = ipam.allocate(config.pool, cid, ifname)
    return AddOutcome(
        result=plan.result(config, ip, cid, ifname, call.netns, previous),
        attachment=plan.attachment(config, ip, cid, ifname),
    )


def _ips_in(text: Optional[str], path: Sequence[str], what: str) -> Optional[str]:
    """The first IPv4 entry (a string without ':') of the `ips` list at `path` in the JSON
    `text`; None when there is no such list."""
    if text is None:
        return None
    try:
        value = rust.loads(text)
    except rust.JsonError as e:
        raise err(DECODE_FAILURE, f"{what}: {e}")
    # serde_json's `Value::pointer`: only objects have named members.
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid(f"{what}: ips must be a list, got {rust.json_display(value)}")
    return next((ip for ip in value if isinstance(ip, str) and ":" not in ip), None)


def _requested_ip(conf: NetConf, call: Invocation) -> Optional[int]:
    """A specific address the runtime asks for, in host-local's order of precedence: the `ips`
    capability (`runtimeConfig.ips`), then `args.cni.ips`, then `IP=` in CNI_ARGS. Only the
    first IPv4 entry counts: this plugin gives one address per attachment."""
    raw = _ips_in(conf.runtime_config, ("ips",), "runtimeConfig")
    if raw is None:
        raw = _ips_in(conf.args, ("cni", "ips"), "args")
    if raw is None:
        raw = next((v for k, v in call.args if k == "IP"), None)
    if raw is None:
        return None
    # Accept a bare address or a CIDR; the prefix always comes from podcidr.
    ip = rust.parse_ipv4(raw.partition("/")[0])
    if ip is None:
        raise invalid(f"requested address {rust.debug_str(raw)} is not an IPv4 address")
    return ip


def del_(conf: NetConf, call: Invocation, kv: Kv) -> None:
    """Releases the address. Needs neither a valid `raw` config nor the netns: the state is
    keyed by network name, and DEL must succeed whenever it can."""
    _preflight(conf)
    Ipam(kv, conf.name).release(call.container_id, call.ifname)


def check(
    conf: NetConf, call: Invocation, kv: Kv, settings: configmod.Settings
) -> Optional[Attachment]:
    _preflight(conf)
    config = configmod.parse(conf.raw, settings)
    if conf.prev_result is None:
        raise invalid("prevResult is required for CHECK")
    previous = prev.parse(conf.prev_result)
    cid, ifname = call.container_id, call.ifname
    ip = Ipam(kv, conf.name).lookup(cid, ifname)
    if ip is None:
        raise invalid(f"no address is allocated to {cid}/{ifname} in network {conf.name}")
    if not config.pool.is_assignable(ip):
        raise invalid(
            f"address {rust.format_ipv4(ip)} of {cid}/{ifname} is not assignable in podcidr "
            f"{config.pool.cidr()}"
        )
    if not previous.has_address(ip):
        raise invalid(f"prevResult has no ip {rust.format_ipv4(ip)} for {cid}/{ifname}")
    return plan.attachment(config, ip, cid, ifname)


def status(conf: NetConf, kv: Kv, settings: configmod.Settings) -> None:
    _preflight(conf)
    config = configmod.parse(conf.raw, settings)
    used = Ipam(kv, conf.name).in_use()
    if used >= config.pool.size():
        raise CniFailure(
            CniError(
                code=NOT_AVAILABLE,
                msg=f"address pool {config.pool.cidr()} exhausted",
                details=f"{used} of {config.pool.size()} addresses in use",
            )
        )


def gc(conf: NetConf, valid: Sequence[AttachmentRef], kv: Kv) -> List[AttachmentRef]:
    """Releases every allocation of this network that is not in `valid`, like DEL for each."""
    _preflight(conf)
    keep: Set[Tuple[str, str]] = {(r.container_id, r.ifname) for r in valid}
    ipam = Ipam(kv, conf.name)
    released: List[AttachmentRef] = []
    for cid, ifname in ipam.attachments():
        if (cid, ifname) in keep:
            continue
        ipam.release(cid, ifname)
        released.append(AttachmentRef(container_id=cid, ifname=ifname))
    return released
