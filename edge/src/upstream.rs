//! The origins behind the edge: parsed from URLs, probed for health, picked in turn.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use pingora::upstreams::peer::HttpPeer;

/// One origin address.
#[derive(Debug)]
pub struct Upstream {
    pub address: SocketAddr,
    pub tls: bool,
    /// Host name for TLS server name indication.
    pub host: String,
    healthy: AtomicBool,
}

impl Upstream {
    /// An upstream from `http://host:port` or `https://host:port` (the port defaults to 80 or 443).
    pub fn parse(url: &str) -> Result<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            bail!("upstream url {url:?} must start with http:// or https://");
        };
        let authority = rest.trim_end_matches('/');
        ensure!(
            !authority.is_empty() && !authority.contains('/'),
            "upstream url {url:?} must be a scheme, a host and an optional port, without a path"
        );
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port: u16 = port
                    .parse()
                    .with_context(|| format!("upstream url {url:?} has an invalid port"))?;
                (host, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let address = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve upstream host {host:?}"))?
            .next()
            .with_context(|| format!("upstream host {host:?} resolves to no address"))?;
        Ok(Self {
            address,
            tls,
            host: host.to_string(),
            healthy: AtomicBool::new(true),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// The upstreams and the rotation among them.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    next: AtomicUsize,
    connect_timeout: Duration,
    read_timeout: Duration,
    stream_read_timeout: Duration,
}

/// What a request expects from the upstream, which sets how long the edge waits for each read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expecting {
    /// An ordinary response: `upstream.read_timeout`.
    Response,
    /// An event stream, quiet between events and heartbeats: `upstream.stream_read_timeout`.
    Stream,
}

impl Upstreams {
    pub fn new(
        urls: &[String],
        connect_timeout: Duration,
        read_timeout: Duration,
        stream_read_timeout: Duration,
    ) -> Result<Self> {
        ensure!(!urls.is_empty(), "no upstream url configured (upstream.url)");
        let list = urls
            .iter()
            .map(|url| Upstream::parse(url))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            list,
            next: AtomicUsize::new(0),
            connect_timeout,
            read_timeout,
            stream_read_timeout,
        })
    }

    /// The next healthy upstream in turn; when none is healthy, the next one anyway, so requests
    /// fail (and stale-if-error applies) rather than wait.
    pub fn pick(&self) -> &Upstream {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.list.len();
        (0..count)
            .map(|offset| &self.list[(start + offset) % count])
            .find(|upstream| upstream.is_healthy())
            .unwrap_or(&self.list[start % count])
    }

    /// A pingora peer for `upstream` with the configured timeouts.
    pub fn peer(&self, upstream: &Upstream, expecting: Expecting) -> HttpPeer {
        let mut peer = HttpPeer::new(upstream.address, upstream.tls, upstream.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(match expecting {
            Expecting::Response => self.read_timeout,
            Expecting::Stream => self.stream_read_timeout,
        });
        peer.options.write_timeout = Some(self.read_timeout);
        peer
    }

    /// Probes every upstream once with a TCP connection and records the result.
    pub async fn check_health(&self) {
        for upstream in &self.list {
            let connect = tokio::net::TcpStream::connect(upstream.address);
            let healthy = matches!(tokio::time::timeout(self.connect_timeout, connect).await, Ok(Ok(_)));
            let was = upstream.healthy.swap(healthy, Ordering::Relaxed);
            if was != healthy {
                tracing::warn!(upstream = %upstream.address, healthy, "upstream health changed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        let u = Upstream::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.address.port(), u.tls, u.host.as_str()), (8080, false, "127.0.0.1"));
        let u = Upstream::parse("https://127.0.0.1/").unwrap();
        assert_eq!((u.address.port(), u.tls), (443, true));
        let u = Upstream::parse("http://[::1]:9000").unwrap();
        assert_eq!(u.address, "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("ftp://x", "must start with"),
            ("http://127.0.0.1:8080/v1", "without a path"),
            ("http://127.0.0.1:port", "invalid port"),
            ("http://", "without a path"),
        ] {
            let error = Upstream::parse(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn unhealthy_upstreams_are_skipped_while_a_healthy_one_remains() {
        let timeout = Duration::from_secs(1);
        let urls = ["http://127.0.0.1:1".to_string(), "http://127.0.0.1:2".to_string()];
        let upstreams = Upstreams::new(&urls, timeout, timeout, timeout).unwrap();
        upstreams.list[0].healthy.store(false, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(upstreams.pick().address.port(), 2);
        }
        upstreams.list[1].healthy.store(false, Ordering::Relaxed);
        let ports: Vec<u16> = (0..4).map(|_| upstreams.pick().address.port()).collect();
        assert!(ports.contains(&1) && ports.contains(&2), "{ports:?}");
    }
}
