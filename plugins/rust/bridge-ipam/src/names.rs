//! The host-side veth name.
//!
//! DEL and CHECK may run in instances with no memory of the ADD, so the name must be derivable
//! from the call alone: "wg" + 12 hex digits of FNV-1a-64 over "<container-id>/<ifname>", which is
//! 14 bytes and fits Linux's 15-byte interface-name limit.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// "wg" + the top 48 bits of the hash, as 12 lowercase hex digits.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let hash = fnv1a64(format!("{container_id}/{ifname}").as_bytes());
    format!("wg{:012x}", hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn veth_name_is_deterministic_short_and_hex() {
        let name = host_veth_name("c1", "eth0");
        assert_eq!(name, host_veth_name("c1", "eth0"));
        assert_eq!(name.len(), 14);
        assert!(name.starts_with("wg"));
        assert!(
            name[2..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_eq!(
            name,
            format!("wg{}", &format!("{:016x}", fnv1a64(b"c1/eth0"))[..12])
        );
    }

    #[test]
    fn veth_name_differs_per_interface_and_container() {
        assert_ne!(host_veth_name("c1", "eth0"), host_veth_name("c1", "eth1"));
        assert_ne!(host_veth_name("c1", "eth0"), host_veth_name("c2", "eth0"));
    }
}
