//! The control plane between an origin and its edges as loadtest sets it up: QUIC with mutual TLS
//! from a development PKI (see `certs/README.md`), which [`origin::configure`] and
//! [`edge::configure`] hand to the servers.
//!
//! [`origin::configure`]: crate::origin::configure
//! [`edge::configure`]: crate::edge::configure

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use shared::tls::{self, CA_CERT_FILE, EdgeIdentity, ORIGIN_CERT_FILE, ORIGIN_KEY_FILE};

/// The line of an edge's `/metrics` while its control-plane connection is open and welcomed.
pub const CONNECTED_METRIC: &str = "edge_control_connected 1";

/// The PEM files of one side of the control plane's mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA bundle the other side's certificate must chain to.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The origin's files in the development PKI folder `dir` (see [`tls::write_dev_pki`]).
    pub fn origin(dir: &Path) -> Self {
        Self {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(ORIGIN_CERT_FILE),
            key: dir.join(ORIGIN_KEY_FILE),
        }
    }

    /// The files of `edge` in the development PKI folder `dir`.
    pub fn edge(dir: &Path, edge: &EdgeIdentity) -> Self {
        Self {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(tls::edge_cert_file(edge)),
            key: dir.join(tls::edge_key_file(edge)),
        }
    }
}

/// One side of the control plane: the origin's UDP address (where the origin listens, what an edge
/// dials) and this side's files.
#[derive(Debug, Clone, Copy)]
pub struct Control<'a> {
    pub address: SocketAddr,
    pub tls: &'a TlsFiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_files_of_the_development_pki() {
        let dir = Path::new("/w/certs");
        assert_eq!(
            TlsFiles::origin(dir),
            TlsFiles {
                ca: PathBuf::from("/w/certs/ca.pem"),
                cert: PathBuf::from("/w/certs/origin.pem"),
                key: PathBuf::from("/w/certs/origin.key"),
            }
        );
        let edge = EdgeIdentity::new("edge-1", "local").unwrap();
        assert_eq!(
            TlsFiles::edge(dir, &edge),
            TlsFiles {
                ca: PathBuf::from("/w/certs/ca.pem"),
                cert: PathBuf::from("/w/certs/edge-edge-1.pem"),
                key: PathBuf::from("/w/certs/edge-edge-1.key"),
            }
        );
    }
}
