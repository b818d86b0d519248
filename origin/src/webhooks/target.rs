//! Which URLs webhooks may be sent to.
//!
//! A target must be `https` (plain `http` only when configured), and every address its host resolves to
//! must be globally reachable: an address in any range of [`SPECIAL_V4`] or [`SPECIAL_V6`] (the IANA
//! special-purpose registries, multicast, and the IPv6 space outside global unicast) is refused unless the
//! host or a range holding the address is allow-listed. An IPv6 address that carries an IPv4 address
//! (IPv4-mapped, -compatible or -translated, NAT64, 6to4, Teredo) is also judged by every IPv4 address it
//! carries, so allow-listing a tunnel or translation range does not open what lies behind it. The check
//! runs when an endpoint is created or changed and again before every delivery; deliveries connect only to
//! addresses that passed it (see [`Resolver`]), so a name that re-resolves elsewhere between the check and
//! the connection gains nothing.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the URL is not valid: {0}")]
    Url(String),
    #[error("the URL must use {expected}")]
    Scheme { expected: &'static str },
    #[error("the URL must not carry a user name or password")]
    Credentials,
    #[error("{host} resolves to {address}, {refusal}; allow it with webhooks.allowed_targets")]
    Forbidden {
        host: String,
        address: IpAddr,
        refusal: Refusal,
    },
    #[error("{host} does not resolve: {error}")]
    Unresolved { host: String, error: String },
}

/// Why an address is refused: the range it is in, and the IPv4 addresses it carries that are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The narrowest special range holding the address, unless it is allow-listed.
    pub range: Option<&'static SpecialRange>,
    /// Each refused IPv4 address the address carries, with the narrowest special range holding it.
    pub carried: Vec<(Ipv4Addr, &'static SpecialRange)>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        if let Some(range) = self.range {
            write!(f, "in {range}")?;
            separator = ", ";
        }
        for (v4, range) in &self.carried {
            write!(f, "{separator}carrying {v4} in {range}")?;
            separator = ", ";
        }
        Ok(())
    }
}

/// An address range written as `a.b.c.d/n` or `x::y/n` (a bare address is a range of one), parsed and
/// matched as an [`IpNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{text}` is not an address or range");
        // The address must also read as one to std, which refuses forms such as `010.0.0.0` that some
        // resolvers read as octal and ipnet's parser as decimal.
        let net = match text.split_once('/') {
            None => IpNet::from(text.parse::<IpAddr>().map_err(|_| invalid())?),
            Some((address, _)) if address.parse::<IpAddr>().is_err() => return Err(invalid()),
            Some(_) => text.parse::<IpNet>().map_err(|_| invalid())?,
        };
        Ok(Self {
            network: net.addr(),
            prefix: net.prefix_len(),
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net())
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        self.net().contains(&address)
    }

    fn net(self) -> IpNet {
        // Cannot panic: every `Cidr` comes from an `IpNet`, parsed or (the tables) built at compile time.
        IpNet::new_assert(self.network, self.prefix)
    }
}

/// A range that is not globally reachable, or reaches addresses the origin cannot check, and its name.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecialRange {
    pub name: &'static str,
    pub cidr: Cidr,
}

impl fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.cidr)
    }
}

/// A range of the tables below; a prefix longer than the address fails the build.
const fn v4(name: &'static str, [a, b, c, d]: [u8; 4], prefix: u8) -> SpecialRange {
    let net = Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix);
    SpecialRange {
        name,
        cidr: Cidr {
            network: IpAddr::V4(net.addr()),
            prefix: net.prefix_len(),
        },
    }
}

const fn v6(name: &'static str, [a, b, c, d, e, f, g, h]: [u16; 8], prefix: u8) -> SpecialRange {
    let net = Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix);
    SpecialRange {
        name,
        cidr: Cidr {
            network: IpAddr::V6(net.addr()),
            prefix: net.prefix_len(),
        },
    }
}

/// IPv4 ranges refused unless allow-listed: every block of the IANA IPv4 Special-Purpose Address Registry
/// (RFC 6890 and updates), multicast, and the limited broadcast address. Blocks the registry marks
/// globally reachable are refused as well (the AS112 and AMT anycast services, the PCP and TURN anycast
/// addresses in 192.0.0.0/24): none of them is a webhook receiver.
pub const SPECIAL_V4: &[SpecialRange] = &[
    v4("unspecified (this network)", [0, 0, 0, 0], 8),
    v4("unspecified (this host)", [0, 0, 0, 0], 32),
    v4("private-use", [10, 0, 0, 0], 8),
    v4("shared address space (CGNAT)", [100, 64, 0, 0], 10),
    v4("loopback", [127, 0, 0, 0], 8),
    v4("link-local (cloud metadata)", [169, 254, 0, 0], 16),
    v4("private-use", [172, 16, 0, 0], 12),
    v4("IETF protocol assignments", [192, 0, 0, 0], 24),
    v4("documentation (TEST-NET-1)", [192, 0, 2, 0], 24),
    v4("AS112-v4", [192, 31, 196, 0], 24),
    v4("AMT", [192, 52, 193, 0], 24),
    v4("6to4 relay anycast (deprecated)", [192, 88, 99, 0], 24),
    v4("private-use", [192, 168, 0, 0], 16),
    v4("AS112 direct delegation", [192, 175, 48, 0], 24),
    v4("benchmarking", [198, 18, 0, 0], 15),
    v4("documentation (TEST-NET-2)", [198, 51, 100, 0], 24),
    v4("documentation (TEST-NET-3)", [203, 0, 113, 0], 24),
    v4("multicast", [224, 0, 0, 0], 4),
    v4("reserved", [240, 0, 0, 0], 4),
    v4("limited broadcast", [255, 255, 255, 255], 32),
];

/// IPv6 ranges refused unless allow-listed: every block of the IANA IPv6 Special-Purpose Address Registry
/// (RFC 6890 and updates) and the deprecated embedding forms, the tunnel and translation prefixes (whose
/// far end the origin cannot check; the IPv4 addresses they carry are judged too), and everything outside
/// global unicast 2000::/3 that the IPv6 Address Space registry does not assign (reserved by the IETF,
/// unique-local, link-local, site-local, multicast). All of 2001::/23 is refused, its few globally
/// reachable anycast and identifier blocks included, and so is 2620:4f:8000::/48, the twin of
/// 192.175.48.0/24.
pub const SPECIAL_V6: &[SpecialRange] = &[
    v6("unspecified", [0, 0, 0, 0, 0, 0, 0, 0], 128),
    v6("loopback", [0, 0, 0, 0, 0, 0, 0, 1], 128),
    v6("IPv4-compatible (deprecated)", [0, 0, 0, 0, 0, 0, 0, 0], 96),
    v6("IPv4-mapped", [0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
    v6("IPv4-translated", [0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
    v6("NAT64 well-known prefix", [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    v6("NAT64 local-use prefix", [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    v6("discard-only", [0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    v6("IETF protocol assignments", [0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
    v6("Teredo", [0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
    v6("benchmarking", [0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
    v6("documentation", [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    v6("6to4", [0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
    v6("AS112 direct delegation", [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48),
    v6("documentation", [0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
    v6("segment routing (SRv6) SIDs", [0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
    v6("unique-local", [0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    v6("link-local", [0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    v6("site-local (deprecated)", [0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    v6("multicast", [0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
    v6("reserved by the IETF", [0, 0, 0, 0, 0, 0, 0, 0], 8),
    v6("reserved by the IETF", [0x100, 0, 0, 0, 0, 0, 0, 0], 8),
    v6("reserved by the IETF", [0x200, 0, 0, 0, 0, 0, 0, 0], 7),
    v6("reserved by the IETF", [0x400, 0, 0, 0, 0, 0, 0, 0], 6),
    v6("reserved by the IETF", [0x800, 0, 0, 0, 0, 0, 0, 0], 5),
    v6("reserved by the IETF", [0x1000, 0, 0, 0, 0, 0, 0, 0], 4),
    v6("reserved by the IETF", [0x4000, 0, 0, 0, 0, 0, 0, 0], 3),
    v6("reserved by the IETF", [0x6000, 0, 0, 0, 0, 0, 0, 0], 3),
    v6("reserved by the IETF", [0x8000, 0, 0, 0, 0, 0, 0, 0], 3),
    v6("reserved by the IETF", [0xa000, 0, 0, 0, 0, 0, 0, 0], 3),
    v6("reserved by the IETF", [0xc000, 0, 0, 0, 0, 0, 0, 0], 3),
    v6("reserved by the IETF", [0xe000, 0, 0, 0, 0, 0, 0, 0], 4),
    v6("reserved by the IETF", [0xf000, 0, 0, 0, 0, 0, 0, 0], 5),
    v6("reserved by the IETF", [0xf800, 0, 0, 0, 0, 0, 0, 0], 6),
    v6("reserved by the IETF", [0xfe00, 0, 0, 0, 0, 0, 0, 0], 9),
];

/// The narrowest special range holding `address`; `None` for a globally reachable one.
pub fn special_range(address: IpAddr) -> Option<&'static SpecialRange> {
    let table = if address.is_ipv4() { SPECIAL_V4 } else { SPECIAL_V6 };
    table
        .iter()
        .filter(|range| range.cidr.contains(address))
        .max_by_key(|range| range.cidr.prefix)
}

/// An IPv4 address an IPv6 address carries, and how many leading bits of the IPv6 address fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Carried {
    v4: Ipv4Addr,
    fixed_by: u8,
}

/// Every IPv4 address `v6` carries, wherever a host or a gateway on the way would take it from:
/// the last 32 bits of IPv4-mapped, -compatible (but `::` and `::1`), -translated and NAT64 addresses;
/// bits 16–48 of 6to4; the Teredo server (bits 32–64) and the inverted Teredo client (the last 32 bits).
/// The local-use NAT64 prefix may be /48 to /96 long, so each place RFC 6052 allows is taken.
fn carried_v4(v6: Ipv6Addr) -> Vec<Carried> {
    let o = v6.octets();
    let at = |i: usize| Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]);
    let last = Carried {
        v4: at(12),
        fixed_by: 128,
    };
    match v6.segments() {
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] | [0x64, 0xff9b, 0, 0, 0, 0, ..] => vec![last],
        [0, 0, 0, 0, 0, 0, ..] if u128::from(v6) > 1 => vec![last],
        // RFC 6052 §2.2: bits 64–71 are left zero, so an address split by them skips octet 8.
        [0x64, 0xff9b, 1, ..] => vec![
            Carried {
                v4: Ipv4Addr::new(o[6], o[7], o[9], o[10]),
                fixed_by: 88,
            },
            Carried {
                v4: Ipv4Addr::new(o[7], o[9], o[10], o[11]),
                fixed_by: 96,
            },
            Carried {
                v4: at(9),
                fixed_by: 104,
            },
            last,
        ],
        [0x2002, ..] => vec![Carried {
            v4: at(2),
            fixed_by: 48,
        }],
        [0x2001, 0, ..] => vec![
            Carried {
                v4: at(4),
                fixed_by: 64,
            },
            Carried {
                v4: !at(12),
                fixed_by: 128,
            },
        ],
        _ => Vec::new(),
    }
}

/// Which targets may be reached: the scheme rule and the allow-list.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow_http: bool,
    allowed_hosts: HashSet<String>,
    allowed_ranges: Vec<Cidr>,
}

impl TargetPolicy {
    /// `allowed` holds host names and address ranges, as `webhooks.allowed_targets` lists them.
    pub fn new(allow_http: bool, allowed: &[String]) -> Self {
        let mut policy = Self {
            allow_http,
            ..Self::default()
        };
        for entry in allowed {
            match entry.parse::<Cidr>() {
                Ok(range) => policy.allowed_ranges.push(range),
                Err(_) => {
                    policy.allowed_hosts.insert(entry.to_ascii_lowercase());
                }
            }
        }
        policy
    }

    /// Parses `text` and checks what can be checked without resolving: scheme, credentials, and an
    /// address written in the URL.
    pub fn parse(&self, text: &str) -> Result<Url, TargetError> {
        let url = Url::parse(text).map_err(|error| TargetError::Url(error.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => {
                let expected = if self.allow_http { "https or http" } else { "https" };
                return Err(TargetError::Scheme { expected });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        let host = url
            .host_str()
            .ok_or_else(|| TargetError::Url("the URL has no host".into()))?;
        if let Some(address) = literal_address(host) {
            self.check_address(host, address)?;
        }
        Ok(url)
    }

    /// Resolves `url`'s host and checks every address it has.
    pub async fn check(&self, url: &Url) -> Result<(), TargetError> {
        let host = url.host_str().unwrap_or_default();
        if literal_address(host).is_some() {
            return self.parse(url.as_str()).map(drop);
        }
        let port = url.port_or_known_default().unwrap_or(443);
        self.resolve(host, port).await.map(drop)
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|error| TargetError::Unresolved {
                host: host.to_owned(),
                error: error.to_string(),
            })?
            .collect();
        if addresses.is_empty() {
            return Err(TargetError::Unresolved {
                host: host.to_owned(),
                error: "no addresses".into(),
            });
        }
        for address in &addresses {
            self.check_address(host, address.ip())?;
        }
        Ok(addresses)
    }

    /// Refuses `address` if it, or an IPv4 address it carries, is in a special range, unless the host is
    /// allow-listed or a range holding it is. A carried IPv4 address is also let through by an
    /// allow-listed IPv6 range that holds the address and is long enough to fix the bits carrying it
    /// (such as the single address `::ffff:7f00:1`): the operator spelled it out.
    fn check_address(&self, host: &str, address: IpAddr) -> Result<(), TargetError> {
        if self.allowed_hosts.contains(&host.to_ascii_lowercase()) {
            return Ok(());
        }
        let allowed = |address: IpAddr, fixed_by: u8| {
            self.allowed_ranges
                .iter()
                .any(|range| range.prefix >= fixed_by && range.contains(address))
        };
        let carried = match address {
            IpAddr::V4(_) => Vec::new(),
            IpAddr::V6(v6) => carried_v4(v6)
                .into_iter()
                .filter(|carried| !allowed(address, carried.fixed_by) && !allowed(carried.v4.into(), 0))
                .filter_map(|carried| special_range(carried.v4.into()).map(|range| (carried.v4, range)))
                .collect(),
        };
        let refusal = Refusal {
            range: special_range(address).filter(|_| !allowed(address, 0)),
            carried,
        };
        if refusal.range.is_none() && refusal.carried.is_empty() {
            return Ok(());
        }
        Err(TargetError::Forbidden {
            host: host.to_owned(),
            address,
            refusal,
        })
    }
}

/// The address a URL host spells out, if it is one (`[::1]` included).
fn literal_address(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// The HTTP client's resolver: it answers only addresses the policy allows, so a connection never
/// reaches an address that was not checked.
#[derive(Debug, Clone)]
pub struct Resolver(pub Arc<TargetPolicy>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addresses = policy.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_what_they_say() {
        let range: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(range.contains("10.1.255.3".parse().unwrap()));
        assert!(!range.contains("10.2.0.1".parse().unwrap()));
        assert!(!range.contains("::1".parse().unwrap()));
        let odd: Cidr = "192.168.4.0/22".parse().unwrap();
        assert!(odd.contains("192.168.7.9".parse().unwrap()) && !odd.contains("192.168.8.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }

    /// The message a strict policy refuses `address` with, written as a URL host.
    fn refusal(policy: &TargetPolicy, address: &str) -> String {
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_owned()
        };
        match policy.parse(&format!("https://{host}/h")) {
            Err(error @ TargetError::Forbidden { .. }) => error.to_string(),
            other => panic!("{address} was not refused: {other:?}"),
        }
    }

    #[test]
    fn the_tables_hold_well_formed_distinct_ranges() {
        let mut seen = HashSet::new();
        for (table, v4) in [(SPECIAL_V4, true), (SPECIAL_V6, false)] {
            for range in table {
                let Cidr { network, prefix } = range.cidr;
                assert_eq!(network.is_ipv4(), v4, "{range} is in the wrong table");
                let host_bits = match network {
                    IpAddr::V4(n) => u128::from(u32::from(n) & u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)),
                    IpAddr::V6(n) => u128::from(n) & u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0),
                };
                assert_eq!(host_bits, 0, "{range} has host bits set");
                assert_eq!(range.cidr.to_string().parse::<Cidr>(), Ok(range.cidr));
                assert!(seen.insert(range.cidr), "{range} is listed twice");
            }
        }
    }

    #[test]
    fn every_special_range_is_refused_and_named() {
        let strict = TargetPolicy::new(false, &[]);
        for (address, range) in [
            ("0.1.2.3", "unspecified (this network) 0.0.0.0/8"),
            ("0.0.0.0", "unspecified (this host) 0.0.0.0/32"),
            ("10.0.0.8", "private-use 10.0.0.0/8"),
            ("100.100.1.1", "shared address space (CGNAT) 100.64.0.0/10"),
            ("127.0.0.1", "loopback 127.0.0.0/8"),
            ("169.254.169.254", "link-local (cloud metadata) 169.254.0.0/16"),
            ("172.20.1.1", "private-use 172.16.0.0/12"),
            ("192.0.0.9", "IETF protocol assignments 192.0.0.0/24"),
            ("192.0.2.1", "documentation (TEST-NET-1) 192.0.2.0/24"),
            ("192.31.196.1", "AS112-v4 192.31.196.0/24"),
            ("192.52.193.1", "AMT 192.52.193.0/24"),
            ("192.88.99.1", "6to4 relay anycast (deprecated) 192.88.99.0/24"),
            ("192.168.1.1", "private-use 192.168.0.0/16"),
            ("192.175.48.1", "AS112 direct delegation 192.175.48.0/24"),
            ("198.19.255.1", "benchmarking 198.18.0.0/15"),
            ("198.51.100.7", "documentation (TEST-NET-2) 198.51.100.0/24"),
            ("203.0.113.9", "documentation (TEST-NET-3) 203.0.113.0/24"),
            ("239.255.255.250", "multicast 224.0.0.0/4"),
            ("250.1.2.3", "reserved 240.0.0.0/4"),
            ("255.255.255.255", "limited broadcast 255.255.255.255/32"),
            ("::", "unspecified ::/128"),
            ("::1", "loopback ::1/128"),
            ("::127.0.0.1", "IPv4-compatible (deprecated) ::/96"),
            ("::7f00:1", "IPv4-compatible (deprecated) ::/96"),
            ("::a9fe:a9fe", "IPv4-compatible (deprecated) ::/96"),
            ("::ffff:127.0.0.1", "IPv4-mapped ::ffff:0.0.0.0/96"),
            ("::ffff:0:7f00:1", "IPv4-translated ::ffff:0:0:0/96"),
            ("64:ff9b::a9fe:a9fe", "NAT64 well-known prefix 64:ff9b::/96"),
            ("64:ff9b:1::1", "NAT64 local-use prefix 64:ff9b:1::/48"),
            ("100::1", "discard-only 100::/64"),
            ("2001:1::1", "IETF protocol assignments 2001::/23"),
            ("2001:4:112::1", "IETF protocol assignments 2001::/23"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo 2001::/32"),
            ("2001:2::1", "benchmarking 2001:2::/48"),
            ("2001:db8::1", "documentation 2001:db8::/32"),
            ("2002:7f00:1::", "6to4 2002::/16"),
            ("2620:4f:8000::1", "AS112 direct delegation 2620:4f:8000::/48"),
            ("3fff:1::1", "documentation 3fff::/20"),
            ("5f00::1", "segment routing (SRv6) SIDs 5f00::/16"),
            ("fd00:ec2::254", "unique-local fc00::/7"),
            ("fe80::1", "link-local fe80::/10"),
            ("fec0::1", "site-local (deprecated) fec0::/10"),
            ("ff02::1", "multicast ff00::/8"),
            ("::1:0:0:0", "reserved by the IETF ::/8"),
            ("4000::1", "reserved by the IETF 4000::/3"),
            ("fe00::1", "reserved by the IETF fe00::/9"),
        ] {
            let parsed: IpAddr = address.parse().unwrap();
            assert_eq!(
                special_range(parsed).map(ToString::to_string).as_deref(),
                Some(range),
                "{address}"
            );
            let message = refusal(&strict, address);
            assert!(message.contains(&format!("in {range}")), "{address}: {message}");
            assert!(message.contains("webhooks.allowed_targets"), "{message}");
        }
    }

    #[test]
    fn ipv6_is_judged_by_the_ipv4_it_carries() {
        let strict = TargetPolicy::new(false, &[]);
        for (address, carried) in [
            ("::127.0.0.1", "127.0.0.1 in loopback 127.0.0.0/8"),
            ("::a9fe:a9fe", "169.254.169.254 in link-local (cloud metadata)"),
            ("::ffff:10.0.0.1", "10.0.0.1 in private-use 10.0.0.0/8"),
            ("::ffff:0:7f00:1", "127.0.0.1 in loopback"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254 in link-local"),
            ("64:ff9b:1:7f00:0:100::", "127.0.0.1 in loopback"),
            ("64:ff9b:1::a:0:a9fe:a9fe", "169.254.169.254 in link-local"),
            ("2002:7f00:1::", "127.0.0.1 in loopback"),
            ("2002:a9fe:a9fe::1", "169.254.169.254 in link-local"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1 in loopback"),
            ("2001:0:a00:1::", "10.0.0.1 in private-use"),
        ] {
            let message = refusal(&strict, address);
            assert!(message.contains(&format!("carrying {carried}")), "{address}: {message}");
        }
        // The Teredo server here is public; only the client (inverted) is named.
        let teredo = refusal(&strict, "2001:0:4136:e378:8000:63bf:80ff:fffe");
        assert!(!teredo.contains("65.54.227.120"), "{teredo}");

        // Allow-listing a tunnel or translation range opens it only to public IPv4 addresses.
        let tunnels = TargetPolicy::new(false, &["2002::/16".into(), "64:ff9b::/96".into(), "2001::/32".into()]);
        for public in [
            "2002:5db8:d822::1",
            "64:ff9b::5db8:d822",
            "2001:0:4136:e378:8000:63bf:a247:27dd",
        ] {
            assert!(tunnels.parse(&format!("https://[{public}]/h")).is_ok(), "{public}");
        }
        let message = refusal(&tunnels, "2002:7f00:1::");
        assert!(
            message.contains("carrying 127.0.0.1 in loopback") && !message.contains("2002::/16"),
            "{message}"
        );
        assert!(refusal(&tunnels, "64:ff9b::a00:1").contains("carrying 10.0.0.1"));
        assert!(refusal(&tunnels, "2001:0:4136:e378:8000:63bf:80ff:fffe").contains("carrying 127.0.0.1"));

        // An allow-listed IPv4 address does not open the IPv6 forms carrying it...
        let loopback = TargetPolicy::new(false, &["127.0.0.1".into()]);
        let message = refusal(&loopback, "::ffff:127.0.0.1");
        assert!(
            message.contains("in IPv4-mapped") && !message.contains("carrying"),
            "{message}"
        );
        // ...but together with the form's range it does, and so does the single IPv6 address.
        let both = TargetPolicy::new(false, &["127.0.0.1".into(), "::ffff:0:0/96".into()]);
        assert!(both.parse("https://[::ffff:127.0.0.1]/h").is_ok());
        let exact = TargetPolicy::new(false, &["::ffff:0:7f00:1".into()]);
        assert!(exact.parse("https://[::ffff:0:7f00:1]/h").is_ok());
        assert!(refusal(&exact, "::ffff:0:7f00:2").contains("carrying 127.0.0.2"));
        let named = TargetPolicy::new(false, &["[::7f00:1]".into()]);
        assert!(named.parse("https://[::7f00:1]/h").is_ok());
    }

    #[test]
    fn public_addresses_are_accepted() {
        let strict = TargetPolicy::new(false, &[]);
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "192.88.98.1",
            "198.20.0.1",
            "223.255.255.1",
            "[2606:4700:4700::1111]",
            "[2001:4860:4860::8888]",
            "[2a00:1450:4001:80b::200e]",
            "[2001:200::1]",
            "[2003::1]",
            "[2620:4f:8001::1]",
        ] {
            let url = format!("https://{public}/h");
            assert!(strict.parse(&url).is_ok(), "{public}: {:?}", strict.parse(&url));
        }
    }

    #[tokio::test]
    async fn targets_are_checked_by_scheme_address_and_allow_list() {
        let strict = TargetPolicy::new(false, &[]);
        assert_eq!(
            strict.parse("http://example.com/hook"),
            Err(TargetError::Scheme { expected: "https" })
        );
        assert!(matches!(
            strict.parse("https://127.0.0.1/hook"),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(matches!(
            strict.parse("https://[::1]:8443/"),
            Err(TargetError::Forbidden { .. })
        ));
        assert_eq!(strict.parse("https://u:p@example.com/"), Err(TargetError::Credentials));
        assert!(strict.parse("not a url").is_err());
        let url = strict.parse("https://localhost/hook").unwrap();
        assert!(matches!(strict.check(&url).await, Err(TargetError::Forbidden { .. })));

        let allowed = TargetPolicy::new(true, &["127.0.0.1".into(), "internal.example".into()]);
        let url = allowed.parse("http://127.0.0.1:9/hook").unwrap();
        assert_eq!(allowed.check(&url).await, Ok(()));
        assert!(matches!(
            allowed.parse("http://10.0.0.1/"),
            Err(TargetError::Forbidden { .. })
        ));
    }
}
