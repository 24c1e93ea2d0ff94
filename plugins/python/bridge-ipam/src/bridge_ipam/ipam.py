"""Address allocation in `wasi:keyvalue`, race-free with nothing but `atomics.increment`.

Every call is a fresh instance and many run at once on one store, so no in-memory lock exists
and `get`-then-`set` would race. An address belongs to whoever moves its claim counter from 0
to 1. Keys, all under the network name so that networks never collide, and exactly the Rust
plugin's, so the two can take turns on one store:

| key | value |
| --- | --- |
| `<net>/cursor` | counter: where the next ADD starts walking the pool |
| `<net>/claim/<ip>` | counter: 1 for the owner, more after losing racers bumped it |
| `<net>/owner/<ip>` | `<container-id>/<ifname>` |
| `<net>/alloc/<container-id>/<ifname>` | `<ip>` |
"""

from __future__ import annotations

from typing import List, Optional, Protocol, Tuple

from wit_world.imports.cni_types import CniError

from .errors import (
    ADDRESS_IN_USE,
    INVALID_CONFIG,
    IO_FAILURE,
    POOL_EXHAUSTED,
    CniFailure,
    err,
)
from .pool import Pool
from .rust import format_ipv4, parse_ipv4

#: A bound on `list-keys` paging, so that a store whose cursor never ends cannot spin us forever.
MAX_PAGES = 100_000

U64_MASK = (1 << 64) - 1


class KvError(Exception):
    """A failed keyvalue operation; the message says why."""


class Kv(Protocol):
    """The `wasi:keyvalue` bucket, behind a protocol so that tests can use a dict. Every method
    raises `KvError` on failure."""

    def get(self, key: str) -> Optional[bytes]: ...

    def set(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def list_keys(self, cursor: Optional[int]) -> Tuple[List[str], Optional[int]]:
        """One page of keys and the cursor of the next page, none on the last."""
        ...

    def increment(self, key: str, delta: int) -> int:
        """Adds `delta` (a missing key counts as 0) and returns the new value, atomically."""
        ...


def _io(op: str, key: str, e: KvError) -> "CniFailure[CniError]":
    return err(IO_FAILURE, f"keyvalue {op} {key}: {e}")


def _parse_ip(raw: bytes) -> Optional[int]:
    try:
        return parse_ipv4(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None


class Ipam:
    """The allocations of one network.

    `net` must not contain `/` (the caller checks), or one network's keys could alias another's.
    """

    def __init__(self, kv: Kv, net: str) -> None:
        self.kv = kv
        self.net = net

    def _alloc_key(self, cid: str, ifname: str) -> str:
        return f"{self.net}/alloc/{cid}/{ifname}"

    def _owner_key(self, ip: int) -> str:
        return f"{self.net}/owner/{format_ipv4(ip)}"

    def _claim_key(self, ip: int) -> str:
        return f"{self.net}/claim/{format_ipv4(ip)}"

    def _get(self, key: str) -> Optional[bytes]:
        try:
            return self.kv.get(key)
        except KvError as e:
            raise _io("get", key, e)

    def _set(self, key: str, value: str) -> None:
        try:
            self.kv.set(key, value.encode())
        except KvError as e:
            raise _io("set", key, e)

    def _delete(self, key: str) -> None:
        try:
            self.kv.delete(key)
        except KvError as e:
            raise _io("delete", key, e)

    def _increment(self, key: str) -> int:
        try:
            return self.kv.increment(key, 1)
        except KvError as e:
            raise _io("increment", key, e)

    def exists(self, cid: str, ifname: str) -> bool:
        """Whether the attachment has an allocation record at all, readable or not."""
        return self._get(self._alloc_key(cid, ifname)) is not None

    def lookup(self, cid: str, ifname: str) -> Optional[int]:
        """The attachment's address; an unreadable record is an I/O failure."""
        key = self._alloc_key(cid, ifname)
        raw = self._get(key)
        if raw is None:
            return None
        ip = _parse_ip(raw)
        if ip is None:
            raise err(IO_FAILURE, f"keyvalue {key} holds no IPv4 address")
        return ip

    def allocate(self, pool: Pool, cid: str, ifname: str) -> int:
        """Claims a free address for the attachment. The caller has checked that it has none."""
        size = pool.size()
        # Concurrent ADDs get different cursors, so they mostly start on different addresses;
        # a released address is reused only after the cursor comes round again, as host-local.
        start = self._increment(f"{self.net}/cursor")
        first = ((start - 1) & U64_MASK) % size  # Rust's wrapping_sub on a u64
        for step in range(size):
            ip = pool.nth((first + step) % size)
            if self._claim(ip, cid, ifname):
                return ip
        raise err(POOL_EXHAUSTED, f"no addresses available in {pool.cidr()}")

    def allocate_exact(self, pool: Pool, ip: int, cid: str, ifname: str) -> int:
        """Claims exactly `ip`, as asked for through the `ips` capability or `IP=` in CNI_ARGS."""
        if not pool.is_assignable(ip):
            raise err(
                INVALID_CONFIG,
                f"requested address {format_ipv4(ip)} is not assignable in {pool.cidr()}",
            )
        if self._claim(ip, cid, ifname):
            return ip
        raise err(ADDRESS_IN_USE, f"requested address {format_ipv4(ip)} is already in use")

    def _claim(self, ip: int, cid: str, ifname: str) -> bool:
        """Takes `ip` for the attachment if nobody holds it; False when someone does."""
        claim = self._claim_key(ip)
        if self._increment(claim) != 1:
            return False
        try:
            self._record(ip, cid, ifname)
        except CniFailure:
            # Undo in DEL's order so the address is not left half-owned; best effort, the first
            # error is the one to report.
            for key in (self._owner_key(ip), self._alloc_key(cid, ifname), claim):
                try:
                    self._delete(key)
                except CniFailure:
                    pass
            raise
        return True

    def _record(self, ip: int, cid: str, ifname: str) -> None:
        self._set(self._owner_key(ip), f"{cid}/{ifname}")
        self._set(self._alloc_key(cid, ifname), format_ipv4(ip))

    def release(self, cid: str, ifname: str) -> Optional[int]:
        """Frees the attachment's address; None when it had none. Idempotent.

        Order matters: the claim goes last, so the address cannot be claimed by someone else
        while our owner record still names it. A crash part-way leaves at worst the alloc record
        (the runtime retries DEL and finishes) or a lone claim (the address leaks; never given
        twice).
        """
        alloc = self._alloc_key(cid, ifname)
        raw = self._get(alloc)
        if raw is None:
            return None
        ip = _parse_ip(raw)
        if ip is None:
            # Nothing to follow to; drop the unreadable record so DEL still succeeds.
            self._delete(alloc)
            return None
        owner = self._owner_key(ip)
        who = self._get(owner)
        if who is not None:
            if who != f"{cid}/{ifname}".encode():
                # The address is someone else's (a stale record of ours): leave their keys.
                self._delete(alloc)
                return None
            self._delete(owner)
        self._delete(alloc)
        self._delete(self._claim_key(ip))
        return ip

    def in_use(self) -> int:
        """How many addresses are owned."""
        return len(self._keys_with_prefix(f"{self.net}/owner/"))

    def attachments(self) -> List[Tuple[str, str]]:
        """Every (container-id, ifname) with an allocation record."""
        prefix = f"{self.net}/alloc/"
        found = []
        for key in self._keys_with_prefix(prefix):
            # Container IDs never contain '/', so the first one splits off the ifname.
            cid, slash, ifname = key[len(prefix) :].partition("/")
            if slash:
                found.append((cid, ifname))
        return found

    def _keys_with_prefix(self, prefix: str) -> List[str]:
        found: List[str] = []
        seen = set()
        cursor: Optional[int] = None
        for _ in range(MAX_PAGES):
            try:
                keys, next_cursor = self.kv.list_keys(cursor)
            except KvError as e:
                raise _io("list-keys", prefix, e)
            for k in keys:
                if k.startswith(prefix) and k not in seen:
                    seen.add(k)
                    found.append(k)
            if next_cursor is None:
                return found
            if cursor == next_cursor:
                break
            cursor = next_cursor
        raise err(
            IO_FAILURE, f"keyvalue list-keys {prefix}: the cursor never reached the end"
        )
