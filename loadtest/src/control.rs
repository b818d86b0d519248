//! The control plane between an origin and its edges as loadtest sets it up: QUIC with mutual TLS
//! from a development PKI (see `certs/README.md`), which [`origin_throughput::configure`] and
//! [`edge_hits::configure`] hand to the servers.
//!
//! [`origin_throughput::configure`]: crate::origin_throughput::configure
//! [`edge_hits::configure`]: crate::edge_hits::configure

use std::net::SocketAddr;

pub use shared::tls::TlsFiles;

/// The line of an edge's `/metrics` while its control-plane connection is open and welcomed.
pub const CONNECTED_METRIC: &str = "edge_control_connected 1";

/// One side of the control plane: the origin's UDP address (where the origin listens, what an edge
/// dials) and this side's files.
#[derive(Debug, Clone, Copy)]
pub struct Control<'a> {
    pub address: SocketAddr,
    pub tls: &'a TlsFiles,
}
