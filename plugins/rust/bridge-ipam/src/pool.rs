//! IPv4 pool maths for `podcidr`.
//!
//! The pool is every host address of the subnet except the network address, the broadcast
//! address and the gateway. Candidates are numbered 0..size so that allocation can start at any
//! offset and wrap around.

use std::net::Ipv4Addr;

/// The smallest subnet that still has a gateway and one address to hand out.
pub const MAX_PREFIX: u8 = 30;
/// The largest pod network taken: a wider one (`0.0.0.0/0`, `128.0.0.0/1`) would put a
/// connected route for much of the internet on the node's bridge.
pub const MIN_PREFIX: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    network: u32,
    prefix: u8,
    gateway: u32,
}

/// Parses `a.b.c.d/n`, masking off host bits as Go's `net.ParseCIDR` does. The message names no
/// key: the caller adds it.
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), String> {
    if cidr.contains(':') {
        return Err(format!(
            "{cidr} is not an IPv4 CIDR (IPv6 is not supported)"
        ));
    }
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr} is not a CIDR (want a.b.c.d/n)"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{cidr} has an invalid IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{cidr} has an invalid prefix length"))?;
    let network = u32::from(addr) & mask(prefix);
    Ok((Ipv4Addr::from(network), prefix))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Pool {
    /// Builds the pool; `gateway` defaults to the first host address. Errors name no key.
    pub fn new(network: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> Result<Pool, String> {
        if prefix > MAX_PREFIX {
            return Err(format!(
                "{network}/{prefix} is too small: the prefix must be at most /{MAX_PREFIX}"
            ));
        }
        if prefix < MIN_PREFIX {
            return Err(format!(
                "{network}/{prefix} is too wide: the prefix must be at least /{MIN_PREFIX}"
            ));
        }
        let network = u32::from(network) & mask(prefix);
        let mut pool = Pool {
            network,
            prefix,
            gateway: network + 1,
        };
        if let Some(gw) = gateway {
            if !pool.is_host(gw) {
                return Err(format!("{gw} is not a host address of {}", pool.cidr()));
            }
            pool.gateway = u32::from(gw);
        }
        Ok(pool)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.gateway)
    }

    /// The subnet in canonical form, e.g. `10.240.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }

    fn broadcast(&self) -> u32 {
        self.network | !mask(self.prefix)
    }

    /// In the subnet, and neither its network nor its broadcast address.
    fn is_host(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip & mask(self.prefix) == self.network && ip != self.network && ip != self.broadcast()
    }

    /// Whether `ip` may be handed out: a host address other than the gateway.
    pub fn is_assignable(&self, ip: Ipv4Addr) -> bool {
        self.is_host(ip) && u32::from(ip) != self.gateway
    }

    /// How many addresses can be handed out; at least 1 because the prefix is at most /30.
    pub fn size(&self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix))) - 3
    }

    /// The `index`-th assignable address, `index` in `0..size()`: host addresses in order, with
    /// the gateway skipped.
    pub fn nth(&self, index: u64) -> Ipv4Addr {
        // index < size() <= 2^32 - 3, so this neither truncates nor overflows.
        let mut ip = self.network + 1 + index as u32;
        if ip >= self.gateway {
            ip += 1;
        }
        Ipv4Addr::from(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, gw: Option<&str>) -> Pool {
        let (net, prefix) = parse_cidr(cidr).unwrap();
        Pool::new(net, prefix, gw.map(|g| g.parse().unwrap())).unwrap()
    }

    #[test]
    fn parses_and_masks_cidrs() {
        assert_eq!(
            parse_cidr("10.240.0.0/24").unwrap(),
            (Ipv4Addr::new(10, 240, 0, 0), 24)
        );
        assert_eq!(
            parse_cidr("10.240.0.77/24").unwrap(),
            (Ipv4Addr::new(10, 240, 0, 0), 24)
        );
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap(), (Ipv4Addr::UNSPECIFIED, 0));
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in [
            "fd00::/64",
            "10.240.0.0",
            "10.240.0/24",
            "10.240.0.0/33",
            "10.240.0.0/-1",
            "x/24",
            "",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad} should not parse");
        }
        assert!(parse_cidr("fd00::/64").unwrap_err().contains("IPv6"));
    }

    #[test]
    fn default_gateway_is_first_host() {
        let p = pool("10.240.0.0/24", None);
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 240, 0, 1));
        assert_eq!(p.cidr(), "10.240.0.0/24");
        assert_eq!(p.size(), 253);
    }

    #[test]
    fn nth_walks_hosts_skipping_gateway() {
        let p = pool("10.240.0.0/24", None);
        assert_eq!(p.nth(0), Ipv4Addr::new(10, 240, 0, 2));
        assert_eq!(p.nth(252), Ipv4Addr::new(10, 240, 0, 254));

        let p = pool("10.240.0.0/24", Some("10.240.0.100"));
        assert_eq!(p.nth(0), Ipv4Addr::new(10, 240, 0, 1));
        assert_eq!(p.nth(98), Ipv4Addr::new(10, 240, 0, 99));
        assert_eq!(p.nth(99), Ipv4Addr::new(10, 240, 0, 101));
        assert_eq!(p.nth(252), Ipv4Addr::new(10, 240, 0, 254));
    }

    #[test]
    fn every_candidate_is_assignable_and_distinct() {
        for (cidr, gw) in [
            ("10.0.0.0/30", None),
            ("10.0.0.0/29", Some("10.0.0.6")),
            ("10.1.0.0/22", Some("10.1.2.0")),
        ] {
            let p = pool(cidr, gw);
            let all: Vec<_> = (0..p.size()).map(|i| p.nth(i)).collect();
            assert!(all.iter().all(|ip| p.is_assignable(*ip)), "{cidr}");
            let mut dedup = all.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), all.len(), "{cidr}");
            assert!(!all.contains(&p.gateway()));
        }
        assert_eq!(pool("10.0.0.0/30", None).size(), 1);
        assert_eq!(pool("10.0.0.0/30", None).nth(0), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn network_broadcast_and_gateway_are_not_assignable() {
        let p = pool("10.240.0.0/24", None);
        for ip in ["10.240.0.0", "10.240.0.255", "10.240.0.1", "10.240.1.5"] {
            assert!(!p.is_assignable(ip.parse().unwrap()), "{ip}");
        }
        assert!(p.is_assignable("10.240.0.2".parse().unwrap()));
    }

    #[test]
    fn rejects_tiny_subnets_and_foreign_gateways() {
        let (net, _) = parse_cidr("10.0.0.0/31").unwrap();
        assert!(Pool::new(net, 31, None).is_err());
        assert!(Pool::new(net, 32, None).is_err());
        let (net, prefix) = parse_cidr("10.240.0.0/24").unwrap();
        for gw in ["10.240.0.0", "10.240.0.255", "10.241.0.1"] {
            assert!(
                Pool::new(net, prefix, Some(gw.parse().unwrap())).is_err(),
                "{gw}"
            );
        }
    }

    #[test]
    fn the_widest_pool_sizes_right_and_wider_ones_are_refused() {
        let p = pool("10.0.0.0/8", None);
        assert_eq!(p.size(), (1u64 << 24) - 3);
        assert_eq!(p.nth(p.size() - 1), Ipv4Addr::new(10, 255, 255, 254));
        for wide in ["0.0.0.0/0", "128.0.0.0/1", "10.0.0.0/7"] {
            let (net, prefix) = parse_cidr(wide).unwrap();
            let e = Pool::new(net, prefix, None).unwrap_err();
            assert!(
                e.contains("is too wide: the prefix must be at least /8"),
                "{e}"
            );
        }
    }
}
