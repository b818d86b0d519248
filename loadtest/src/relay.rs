//! A UDP relay on loopback that delays the datagrams going one way: network delay between an edge and
//! the origin's control plane without `tc netem` (whose kernel module a machine may lack).
//!
//! The edge sends to the relay's address; each datagram goes on to the origin at once, from a socket of
//! the relay's own, and what the origin answers is held for `delay` before it goes back to the edge, in
//! arrival order. Only the origin → edge direction is delayed, so the time from the origin sending an
//! invalidation to it reading the acknowledgement is the one-way delay plus the edge's own work.
//! Tokio's timers have a resolution of one millisecond: a datagram is held up to a millisecond longer.
//!
//! The relay can also be cut: datagrams are then dropped both ways, as by a network partition.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The largest datagram relayed (QUIC's are at most 1500 bytes on loopback paths unless discovered larger).
const MAX_DATAGRAM: usize = 65_535;

/// Datagrams toward the edge and when each is due, oldest first.
type Held = VecDeque<(Instant, Vec<u8>)>;

/// A running relay; stops when dropped.
pub struct DelayRelay {
    /// Where the edge sends.
    pub address: SocketAddr,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl DelayRelay {
    /// Relays datagrams between an edge (whichever address first writes to it) and `origin`, holding
    /// those toward the edge for `delay`.
    pub async fn start(origin: SocketAddr, delay: Duration) -> Result<Self> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let edge_side = Arc::new(UdpSocket::bind(loopback).await.context("bind the relay's edge side")?);
        let origin_side = Arc::new(
            UdpSocket::bind(loopback)
                .await
                .context("bind the relay's origin side")?,
        );
        origin_side
            .connect(origin)
            .await
            .context("aim the relay at the origin")?;
        let address = edge_side.local_addr()?;
        let edge: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let held: Arc<std::sync::Mutex<Held>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let cut = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));

        let toward_origin = {
            let (edge_side, origin_side, edge) = (edge_side.clone(), origin_side.clone(), edge.clone());
            let (cut, dropped) = (cut.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut buffer = vec![0; MAX_DATAGRAM];
                while let Ok((len, from)) = edge_side.recv_from(&mut buffer).await {
                    if cut.load(Ordering::Relaxed) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    *edge.lock().await = Some(from);
                    // A lost datagram is what UDP allows; QUIC resends.
                    let _ = origin_side.send(&buffer[..len]).await;
                }
            })
        };
        let hold = {
            let (origin_side, held, arrived) = (origin_side.clone(), held.clone(), arrived.clone());
            let (cut, dropped) = (cut.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut buffer = vec![0; MAX_DATAGRAM];
                while let Ok(len) = origin_side.recv(&mut buffer).await {
                    if cut.load(Ordering::Relaxed) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let due = Instant::now() + delay;
                    held.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push_back((due, buffer[..len].to_vec()));
                    arrived.notify_one();
                }
            })
        };
        let toward_edge = tokio::spawn(async move {
            loop {
                let next = held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop_front();
                let Some((due, datagram)) = next else {
                    arrived.notified().await;
                    continue;
                };
                tokio::time::sleep_until(due).await;
                if let Some(edge) = *edge.lock().await {
                    let _ = edge_side.send_to(&datagram, edge).await;
                }
            }
        });
        Ok(Self {
            address,
            cut,
            dropped,
            tasks: vec![toward_origin, hold, toward_edge],
        })
    }

    /// Drops every datagram from now on (`true`), or relays them again (`false`).
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }

    /// Datagrams dropped while cut, both ways.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_toward_the_edge_are_held_for_the_delay_and_kept_in_order() {
        let origin = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let delay = Duration::from_millis(30);
        let relay = DelayRelay::start(origin.local_addr().unwrap(), delay).await.unwrap();
        let edge = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        edge.send_to(b"hello", relay.address).await.unwrap();
        let mut buffer = [0; 16];
        let (len, relay_side) = origin.recv_from(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..len], b"hello");
        let sent = Instant::now();
        for message in [b"one", b"two"] {
            origin.send_to(message, relay_side).await.unwrap();
        }
        for expected in [b"one", b"two"] {
            let len = edge.recv(&mut buffer).await.unwrap();
            assert_eq!(&buffer[..len], expected);
        }
        assert!(sent.elapsed() >= delay, "answered after {:?}", sent.elapsed());

        relay.set_cut(true);
        edge.send_to(b"lost", relay.address).await.unwrap();
        // Mended only once the relay has read (and dropped) it.
        for _ in 0..1000 {
            if relay.dropped() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(relay.dropped(), 1);
        relay.set_cut(false);
        edge.send_to(b"kept", relay.address).await.unwrap();
        let len = origin.recv(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..len], b"kept", "a datagram sent while cut went through");
    }
}
