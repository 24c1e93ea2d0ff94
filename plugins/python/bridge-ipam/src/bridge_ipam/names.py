"""The host-side veth name.

DEL and CHECK run in fresh instances with no memory of the ADD, so the name must be derivable
from the call alone: "wg" + 12 hex digits of FNV-1a-64 over "<container-id>/<ifname>", which is
14 bytes and fits Linux's 15-byte interface-name limit. It must match the Rust plugin's bit for
bit: a pod added by one can be deleted by the other.
"""

FNV_OFFSET = 0xCBF2_9CE4_8422_2325
FNV_PRIME = 0x0000_0100_0000_01B3
U64_MASK = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        # Python ints do not wrap: mask to get Rust's `wrapping_mul`.
        h = ((h ^ b) * FNV_PRIME) & U64_MASK
    return h


def host_veth_name(container_id: str, ifname: str) -> str:
    """"wg" + the top 48 bits of the hash, as 12 lowercase hex digits."""
    h = fnv1a64(f"{container_id}/{ifname}".encode())
    return f"wg{h >> 16:012x}"
