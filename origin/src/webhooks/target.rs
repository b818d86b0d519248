//! Which URLs webhooks may be sent to.
//!
//! A target must be `https` (plain `http` only when configured), and every address its host resolves to
//! must be a public one: loopback, private, shared (CGNAT), link-local (which holds the cloud metadata
//! address), unique-local, multicast and reserved ranges are refused unless the host or a range holding the
//! address is allow-listed. The check runs when an endpoint is created or changed and again before every
//! delivery; deliveries connect only to addresses that passed it (see [`Resolver`]), so a name that
//! re-resolves elsewhere between the check and the connection gains nothing.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

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
    #[error("{host} resolves to {address}, a {range} address; allow it with webhooks.allowed_targets")]
    Forbidden {
        host: String,
        address: IpAddr,
        range: &'static str,
    },
    #[error("{host} does not resolve: {error}")]
    Unresolved { host: String, error: String },
}

/// An address range written as `a.b.c.d/n` or `x::y/n` (a bare address is a range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an address or range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has a prefix length outside 0–{max}"))?
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                prefix_matches(&network.octets(), &address.octets(), self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                prefix_matches(&network.octets(), &address.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(network: &[u8], address: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    network[..whole] == address[..whole] && (rest == 0 || (network[whole] ^ address[whole]) & (0xff << (8 - rest)) == 0)
}

/// The kind of range a non-public address is in; `None` for a public address.
pub fn special_range(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            // Addresses that carry an IPv4 address are judged by it.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let [a, b, ..] = v6.segments();
            if a == 0x64 && b == 0xff9b {
                let [.., hi, lo] = v6.segments();
                return special_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_unique_local() {
                Some("unique-local")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if a == 0x2001 && b == 0xdb8 {
                Some("reserved")
            } else {
                None
            }
        }
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if a == 0 {
        Some("unspecified")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) || v4.is_documentation() {
        Some("reserved")
    } else {
        None
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

    fn check_address(&self, host: &str, address: IpAddr) -> Result<(), TargetError> {
        if self.allowed_hosts.contains(&host.to_ascii_lowercase())
            || self.allowed_ranges.iter().any(|range| range.contains(address))
        {
            return Ok(());
        }
        match special_range(address) {
            None => Ok(()),
            Some(range) => Err(TargetError::Forbidden {
                host: host.to_owned(),
                address,
                range,
            }),
        }
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

    #[test]
    fn special_addresses_are_named() {
        for (address, range) in [
            ("127.0.0.1", "loopback"),
            ("10.0.0.8", "private"),
            ("172.20.1.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.100.1.1", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fd00:ec2::254", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
        ] {
            assert_eq!(special_range(address.parse().unwrap()), Some(range), "{address}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "100.128.0.1", "172.32.0.1"] {
            assert_eq!(special_range(public.parse().unwrap()), None, "{public}");
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
