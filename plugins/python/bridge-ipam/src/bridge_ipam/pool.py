"""IPv4 pool maths for `podcidr`.

The pool is every host address of the subnet except the network address, the broadcast address
and the gateway. Candidates are numbered 0..size so that allocation can start at any offset and
wrap around. Addresses are plain ints here; `rust.format_ipv4` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .rust import format_ipv4, parse_ipv4, parse_unsigned

#: The smallest subnet that still has a gateway and one address to hand out.
MAX_PREFIX = 30

U32_MASK = 0xFFFF_FFFF


class PoolError(ValueError):
    """A bad CIDR or gateway. The message names no key: the caller adds it."""


def mask(prefix: int) -> int:
    return 0 if prefix == 0 else (U32_MASK << (32 - prefix)) & U32_MASK


def parse_cidr(cidr: str) -> Tuple[int, int]:
    """Parses `a.b.c.d/n`, masking off host bits as Go's `net.ParseCIDR` does."""
    if ":" in cidr:
        raise PoolError(f"{cidr} is not an IPv4 CIDR (IPv6 is not supported)")
    addr_text, slash, prefix_text = cidr.partition("/")
    if not slash:
        raise PoolError(f"{cidr} is not a CIDR (want a.b.c.d/n)")
    addr = parse_ipv4(addr_text)
    if addr is None:
        raise PoolError(f"{cidr} has an invalid IPv4 address")
    # u8 first, as Rust parses it: "+24" and "024" are fine, "300" is not a prefix either way.
    prefix = parse_unsigned(prefix_text, 255)
    if prefix is None or prefix > 32:
        raise PoolError(f"{cidr} has an invalid prefix length")
    return addr & mask(prefix), prefix


@dataclass(frozen=True)
class Pool:
    network: int
    prefix: int
    gateway: int

    @staticmethod
    def new(network: int, prefix: int, gateway: Optional[int]) -> "Pool":
        """Builds the pool; `gateway` defaults to the first host address."""
        if prefix > MAX_PREFIX:
            raise PoolError(
                f"{format_ipv4(network)}/{prefix} is too small: "
                f"the prefix must be at most /{MAX_PREFIX}"
            )
        network &= mask(prefix)
        pool = Pool(network, prefix, network + 1)
        if gateway is not None:
            if not pool.is_host(gateway):
                raise PoolError(
                    f"{format_ipv4(gateway)} is not a host address of {pool.cidr()}"
                )
            pool = Pool(network, prefix, gateway)
        return pool

    def cidr(self) -> str:
        """The subnet in canonical form, e.g. `10.240.0.0/24`."""
        return f"{format_ipv4(self.network)}/{self.prefix}"

    def broadcast(self) -> int:
        return self.network | (~mask(self.prefix) & U32_MASK)

    def is_host(self, ip: int) -> bool:
        """In the subnet, and neither its network nor its broadcast address."""
        return (
            ip & mask(self.prefix) == self.network
            and ip != self.network
            and ip != self.broadcast()
        )

    def is_assignable(self, ip: int) -> bool:
        """Whether `ip` may be handed out: a host address other than the gateway."""
        return self.is_host(ip) and ip != self.gateway

    def size(self) -> int:
        """How many addresses can be handed out; at least 1 because the prefix is at most /30."""
        return (1 << (32 - self.prefix)) - 3

    def nth(self, index: int) -> int:
        """The `index`-th assignable address, `index` in `0..size()`: host addresses in order,
        with the gateway skipped."""
        ip = self.network + 1 + index
        if ip >= self.gateway:
            ip += 1
        return ip
