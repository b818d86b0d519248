//! TLS identity of the control plane: a development PKI, the rustls configurations of both ends, and
//! the edge identity carried in a client certificate. No I/O beyond reading and writing PEM files.
//!
//! # Trust
//!
//! One CA (or, while it is being rotated, a bundle of CAs) signs the origin's certificate and every
//! edge's. The origin's [`server_config`] requires a client certificate that chains to that bundle;
//! an edge's [`client_config`] presents its certificate and accepts only an origin certificate that
//! chains to the same bundle. Both are TLS 1.3 only, as QUIC requires, on the *ring* provider.
//!
//! # Edge identity
//!
//! An edge certificate names its edge in one subject alternative name URI,
//! `spiffe://forecast/edge/{region}/{name}` (the [SPIFFE ID] form), and carries the extended key usage
//! `clientAuth` only. The URI is the identity: [`EdgeIdentity::from_certificate`] reads it and nothing
//! else. The subject's common name repeats the edge name for people reading the certificate
//! (`openssl x509 -noout -text`); it is not trusted.
//!
//! Names and regions are 1 to 63 characters of `a-z 0-9 . _ -`, starting with a letter or digit, so an
//! identity is a valid URI path, a file name and a bounded metric label as it is.
//!
//! # Development PKI (feature `dev-pki`)
//!
//! [`write_dev_pki`] makes what a laptop needs into a folder (`certs/`): a CA, an origin certificate for
//! `localhost`, `127.0.0.1` and `::1`, and one certificate per edge, each with its key (mode 0600). It
//! creates only what is missing, so it can run on every start. The same steps are available one by one
//! ([`generate_ca`], [`issue_origin`], [`issue_edge`]) for tests and tools.
//!
//! [SPIFFE ID]: https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{CertificateError, ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use time::Duration;
use x509_parser::extensions::GeneralName;

/// Where every edge identity URI starts: the SPIFFE trust domain `forecast`, path `edge/`.
pub const EDGE_URI_PREFIX: &str = "spiffe://forecast/edge/";

/// The longest edge name or region.
pub const MAX_LABEL_LEN: usize = 63;

/// The names a development origin certificate is valid for.
pub const DEV_ORIGIN_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Common name of the development CA.
pub const DEV_CA_NAME: &str = "forecast development CA";
/// How long the development CA is valid.
pub const DEV_CA_VALIDITY: Duration = Duration::days(10 * 365);
/// How long development origin and edge certificates are valid.
pub const DEV_LEAF_VALIDITY: Duration = Duration::days(365);

// File names in a development PKI folder; edge files are named by `edge_cert_file` and `edge_key_file`.
/// The CA certificate (the CA bundle of both sides) in a development PKI folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key in a development PKI folder.
pub const CA_KEY_FILE: &str = "ca.key";
/// The origin's certificate in a development PKI folder.
pub const ORIGIN_CERT_FILE: &str = "origin.pem";
/// The origin's key in a development PKI folder.
pub const ORIGIN_KEY_FILE: &str = "origin.key";

/// `edge-{name}.pem`: the certificate file of an edge in a development PKI folder.
pub fn edge_cert_file(edge: &EdgeIdentity) -> String {
    format!("edge-{}.pem", edge.name)
}

/// `edge-{name}.key`: the key file of an edge in a development PKI folder.
pub fn edge_key_file(edge: &EdgeIdentity) -> String {
    format!("edge-{}.key", edge.name)
}

// ---------------------------------------------------------------------------------------------------
// Edge identity

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "an edge {field} must be 1 to 63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit; got {value:?}"
    )]
    InvalidLabel { field: &'static str, value: String },
    #[error("malformed edge URI {0:?}: expected spiffe://forecast/edge/{{region}}/{{name}}")]
    MalformedUri(String),
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate names no edge: no subject alternative name URI starts with {EDGE_URI_PREFIX}")]
    Missing,
    #[error("the certificate names {0} edges; an edge certificate names exactly one")]
    Ambiguous(usize),
}

/// Who an edge is, as its certificate says: its name and its region. Valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeIdentity {
    name: String,
    region: String,
}

impl EdgeIdentity {
    pub fn new(name: impl Into<String>, region: impl Into<String>) -> Result<Self, IdentityError> {
        let name = checked_label("name", name.into())?;
        let region = checked_label("region", region.into())?;
        Ok(Self { name, region })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// `spiffe://forecast/edge/{region}/{name}`, the subject alternative name that carries it.
    pub fn uri(&self) -> String {
        format!("{EDGE_URI_PREFIX}{}/{}", self.region, self.name)
    }

    /// The identity written as [`uri`](Self::uri) writes it.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::MalformedUri(uri.to_owned());
        let (region, name) = uri
            .strip_prefix(EDGE_URI_PREFIX)
            .and_then(|path| path.split_once('/'))
            .ok_or_else(malformed)?;
        Self::new(name, region).map_err(|_| malformed())
    }

    /// The identity named by a certificate (DER), such as the client certificate the TLS handshake
    /// verified: exactly one subject alternative name URI under [`EDGE_URI_PREFIX`].
    ///
    /// This reads the certificate; it does not check who signed it. Call it on a certificate the TLS
    /// verifier accepted (quinn's `Connection::peer_identity`, rustls' `peer_certificates`), never on one
    /// that arrived otherwise.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|ext| &ext.value.general_names)
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(EDGE_URI_PREFIX) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::Missing),
            [uri] => Self::from_uri(uri),
            several => Err(IdentityError::Ambiguous(several.len())),
        }
    }
}

impl fmt::Display for EdgeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.name)
    }
}

fn checked_label(field: &'static str, value: String) -> Result<String, IdentityError> {
    let bytes = value.as_bytes();
    let valid = (1..=MAX_LABEL_LEN).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(value)
    } else {
        Err(IdentityError::InvalidLabel { field, value })
    }
}

// ---------------------------------------------------------------------------------------------------
// Issuing certificates (the development PKI)

#[cfg(any(test, feature = "dev-pki"))]
mod dev_pki;
#[cfg(any(test, feature = "dev-pki"))]
pub use dev_pki::{CertifiedKey, PkiError, Validity, generate_ca, issue_edge, issue_origin, write_dev_pki};

// ---------------------------------------------------------------------------------------------------
// rustls configurations

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{from}: not valid PEM: {error}")]
    Pem {
        from: String,
        error: rustls::pki_types::pem::Error,
    },
    #[error("{0}: no certificate (no PEM block \"BEGIN CERTIFICATE\")")]
    NoCertificate(String),
    #[error("{0}: no private key (no PEM block \"BEGIN PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")")]
    NoKey(String),
    #[error("{from}: the private key cannot be used: {error}")]
    UnusableKey { from: String, error: rustls::Error },
    #[error("{key} is not the private key of the certificate in {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("{from}: not a usable CA certificate: {error}")]
    BadCa { from: String, error: rustls::Error },
    #[error("the certificate in {cert} is refused under the CA certificates in {ca}: {reason}")]
    NotTrusted { cert: String, ca: String, reason: String },
    #[error("building the TLS configuration failed: {0}")]
    Config(String),
}

/// The PEM files of one side of the control plane's mutual TLS, as configuration names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA bundle the other side's certificate must chain to.
    pub ca: PathBuf,
    /// This side's certificate (for an edge, its identity) and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The origin's files in the development PKI folder `dir` (see [`write_dev_pki`]).
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
            cert: dir.join(edge_cert_file(edge)),
            key: dir.join(edge_key_file(edge)),
        }
    }

    /// Reads and checks the three files.
    pub fn read(&self) -> Result<TlsPem, TlsError> {
        TlsPem::read(&self.ca, &self.cert, &self.key)
    }
}

/// The PEM inputs of one end of the control plane: the CA bundle it trusts, its certificate (chain,
/// end-entity first) and its private key, each with where it came from, which errors name.
///
/// The CA bundle may hold several CA certificates: during a CA rotation, the old and the new one.
/// `Debug` does not show the key.
pub struct TlsPem {
    ca: Pem,
    cert: Pem,
    key: Pem,
}

struct Pem {
    from: String,
    bytes: Vec<u8>,
}

impl TlsPem {
    /// Reads the three files; an error names the file and what it was for.
    pub fn read(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            fs::read(path)
                .map(|bytes| Pem {
                    from: path.display().to_string(),
                    bytes,
                })
                .map_err(|source| TlsError::Read {
                    what,
                    path: path.to_owned(),
                    source,
                })
        };
        Ok(Self {
            ca: read("the CA certificates", ca)?,
            cert: read("the certificate", cert)?,
            key: read("the private key", key)?,
        })
    }

    /// PEM text held in memory; errors call them "the CA PEM", "the certificate PEM" and "the key PEM".
    pub fn from_memory(ca: impl Into<Vec<u8>>, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        let pem = |from: &str, bytes: Vec<u8>| Pem {
            from: from.to_owned(),
            bytes,
        };
        Self {
            ca: pem("the CA PEM", ca.into()),
            cert: pem("the certificate PEM", cert.into()),
            key: pem("the key PEM", key.into()),
        }
    }
}

impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPem")
            .field("ca", &self.ca.from)
            .field("cert", &self.cert.from)
            .field("key", &self.key.from)
            .finish()
    }
}

/// What both configurations are built from, parsed and checked.
struct Loaded {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    certified: rustls::sign::CertifiedKey,
}

impl Loaded {
    fn new(pem: &TlsPem) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut roots = RootCertStore::empty();
        for der in certificates(&pem.ca)? {
            roots.add(der).map_err(|error| TlsError::BadCa {
                from: pem.ca.from.clone(),
                error,
            })?;
        }

        let chain = certificates(&pem.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&pem.key.bytes).map_err(|error| match error {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(pem.key.from.clone()),
            error => TlsError::Pem {
                from: pem.key.from.clone(),
                error,
            },
        })?;
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|error| match error {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsError::KeyMismatch {
                key: pem.key.from.clone(),
                cert: pem.cert.from.clone(),
            },
            error => TlsError::UnusableKey {
                from: pem.key.from.clone(),
                error,
            },
        })?;
        Ok(Self {
            provider,
            roots: Arc::new(roots),
            certified,
        })
    }

    /// The end-entity certificate and the intermediates after it.
    fn chain(&self, pem: &TlsPem) -> Result<(&CertificateDer<'static>, &[CertificateDer<'static>]), TlsError> {
        self.certified
            .cert
            .split_first()
            .ok_or_else(|| TlsError::NoCertificate(pem.cert.from.clone()))
    }

    fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
            .build()
            .map_err(|error| TlsError::Config(error.to_string()))
    }
}

/// Every certificate of a PEM input, at least one.
fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&pem.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            from: pem.from.clone(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(pem.from.clone()));
    }
    Ok(certs)
}

fn not_trusted(pem: &TlsPem, error: &rustls::Error) -> TlsError {
    let reason = match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "it is not signed by any of them".to_owned()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => "it is not issued for this use (extended key usage)".to_owned(),
        rustls::Error::InvalidCertificate(error) => error.to_string(),
        error => error.to_string(),
    };
    TlsError::NotTrusted {
        cert: pem.cert.from.clone(),
        ca: pem.ca.from.clone(),
        reason,
    }
}

/// The origin's configuration: TLS 1.3, its certificate, and a required client certificate that chains
/// to the CA bundle. `alpn` is the one protocol it accepts ([`crate::wire::ALPN`]); a client that
/// offers others is refused.
///
/// Refused here rather than at the first handshake: an unreadable or empty input, a key that is not the
/// certificate's, and a certificate that does not chain to the bundle as a server certificate (the
/// edges trust the same bundle), is expired or not valid yet.
pub fn server_config(pem: &TlsPem, alpn: &[u8]) -> Result<ServerConfig, TlsError> {
    let loaded = Loaded::new(pem)?;
    let (end_entity, intermediates) = loaded.chain(pem)?;
    let parsed = ParsedCertificate::try_from(end_entity).map_err(|error| not_trusted(pem, &error))?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &loaded.roots,
        intermediates,
        UnixTime::now(),
        loaded.provider.signature_verification_algorithms.all,
    )
    .map_err(|error| not_trusted(pem, &error))?;

    let verifier = loaded.client_verifier()?;
    let mut config = ServerConfig::builder_with_provider(loaded.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(loaded.certified)));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// An edge's configuration: TLS 1.3, its certificate as the client certificate, and an origin
/// certificate that must chain to the CA bundle. `alpn` is the one protocol it offers
/// ([`crate::wire::ALPN`]).
///
/// Refused here rather than at the first handshake: an unreadable or empty input, a key that is not the
/// certificate's, and a certificate the origin would refuse (not chaining to the bundle as a client
/// certificate, expired, not valid yet).
pub fn client_config(pem: &TlsPem, alpn: &[u8]) -> Result<ClientConfig, TlsError> {
    let loaded = Loaded::new(pem)?;
    let (end_entity, intermediates) = loaded.chain(pem)?;
    loaded
        .client_verifier()?
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map_err(|error| not_trusted(pem, &error))?;

    let mut config = ClientConfig::builder_with_provider(loaded.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_root_certificates(loaded.roots.clone())
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(loaded.certified)));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use time::OffsetDateTime;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, ServerConnection};

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
    use crate::wire::ALPN;

    struct Pki {
        ca: CertifiedKey,
        origin: CertifiedKey,
        edges: Vec<(EdgeIdentity, CertifiedKey)>,
    }

    fn year() -> Validity {
        Validity::starting_now(Duration::days(365))
    }

    fn origin_names() -> Vec<String> {
        DEV_ORIGIN_NAMES.iter().map(|name| name.to_string()).collect()
    }

    fn pki() -> Pki {
        let ca = generate_ca("test CA", year()).unwrap();
        let origin = issue_origin(&ca, &origin_names(), year()).unwrap();
        let edges = [("edge-1", "eu-west"), ("edge-2", "us-east")]
            .into_iter()
            .map(|(name, region)| {
                let identity = EdgeIdentity::new(name, region).unwrap();
                let cert = issue_edge(&ca, &identity, year()).unwrap();
                (identity, cert)
            })
            .collect();
        Pki { ca, origin, edges }
    }

    fn pem(ca: &CertifiedKey, own: &CertifiedKey) -> TlsPem {
        TlsPem::from_memory(ca.cert_pem.clone(), own.cert_pem.clone(), own.key_pem.clone())
    }

    fn der(cert_pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()
    }

    /// A client configuration built by hand, as a peer that does not use [`client_config`] would.
    fn raw_client(ca: &CertifiedKey, own: Option<&CertifiedKey>) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(der(&ca.cert_pem)).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match own {
            Some(own) => builder
                .with_client_auth_cert(
                    vec![der(&own.cert_pem)],
                    PrivateKeyDer::from_pem_slice(own.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        config
    }

    #[derive(Debug)]
    enum Failed {
        Client(rustls::Error),
        Server(rustls::Error),
    }

    /// A TLS handshake in memory: each side's bytes are handed to the other until neither is
    /// handshaking. Returns the server's connection, or which side refused and why.
    fn handshake(client: ClientConfig, server: ServerConfig, server_name: &str) -> Result<ServerConnection, Failed> {
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server = ServerConnection::new(Arc::new(server)).unwrap();
        let mut bytes = Vec::new();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                assert_eq!(client.alpn_protocol(), Some(ALPN));
                return Ok(server);
            }
            while client.wants_write() {
                client.write_tls(&mut bytes).unwrap();
            }
            let mut unread = &bytes[..];
            while !unread.is_empty() {
                server.read_tls(&mut unread).unwrap();
                server.process_new_packets().map_err(Failed::Server)?;
            }
            bytes.clear();
            while server.wants_write() {
                server.write_tls(&mut bytes).unwrap();
            }
            let mut unread = &bytes[..];
            while !unread.is_empty() {
                client.read_tls(&mut unread).unwrap();
                client.process_new_packets().map_err(Failed::Client)?;
            }
            bytes.clear();
        }
        panic!("the handshake made no progress");
    }

    fn origin_server(pki: &Pki) -> ServerConfig {
        server_config(&pem(&pki.ca, &pki.origin), ALPN).unwrap()
    }

    #[test]
    fn identities_check_their_labels_and_round_trip_through_uris() {
        let edge = EdgeIdentity::new("edge-1", "eu-west.2").unwrap();
        assert_eq!(edge.uri(), "spiffe://forecast/edge/eu-west.2/edge-1");
        assert_eq!(EdgeIdentity::from_uri(&edge.uri()).unwrap(), edge);
        assert_eq!(edge.to_string(), "eu-west.2/edge-1");
        for bad in ["", "Edge", "-edge", ".", "a/b", "é", &"a".repeat(64)] {
            assert!(
                matches!(
                    EdgeIdentity::new(bad, "eu"),
                    Err(IdentityError::InvalidLabel { field: "name", .. })
                ),
                "{bad:?}"
            );
        }
        assert!(EdgeIdentity::new("a".repeat(63), "eu").is_ok());
        for bad in [
            "spiffe://forecast/edge/eu",
            "spiffe://forecast/edge/eu/a/b",
            "spiffe://other/edge/eu/a",
        ] {
            assert_eq!(
                EdgeIdentity::from_uri(bad).unwrap_err(),
                IdentityError::MalformedUri(bad.to_owned())
            );
        }
    }

    #[test]
    fn an_edge_certificate_carries_its_identity_and_an_origin_certificate_none() {
        let pki = pki();
        for (identity, cert) in &pki.edges {
            assert_eq!(&EdgeIdentity::from_certificate(&der(&cert.cert_pem)).unwrap(), identity);
        }
        assert_eq!(
            EdgeIdentity::from_certificate(&der(&pki.origin.cert_pem)).unwrap_err(),
            IdentityError::Missing
        );
        assert!(matches!(
            EdgeIdentity::from_certificate(b"not a certificate"),
            Err(IdentityError::Unparsable(_))
        ));
    }

    #[test]
    fn a_valid_edge_and_the_origin_complete_the_handshake_and_the_origin_learns_who_it_is() {
        let pki = pki();
        for (identity, cert) in &pki.edges {
            for server_name in ["localhost", "127.0.0.1", "::1"] {
                let client = client_config(&pem(&pki.ca, cert), ALPN).unwrap();
                let server = handshake(client, origin_server(&pki), server_name).unwrap();
                let peer = server.peer_certificates().unwrap();
                assert_eq!(&EdgeIdentity::from_certificate(&peer[0]).unwrap(), identity);
                assert_eq!(server.alpn_protocol(), Some(ALPN));
            }
        }
    }

    #[test]
    fn the_configurations_are_tls13_on_ring_with_the_quic_initial_suite() {
        let pki = pki();
        let server = origin_server(&pki);
        let client = client_config(&pem(&pki.ca, &pki.edges[0].1), ALPN).unwrap();
        // quinn's QuicServerConfig / QuicClientConfig need TLS13_AES_128_GCM_SHA256 in the provider.
        for provider in [server.crypto_provider(), client.crypto_provider()] {
            assert!(
                provider
                    .cipher_suites
                    .iter()
                    .any(|suite| suite.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
        assert_eq!(server.max_early_data_size, 0, "QUIC allows only 0 or u32::MAX");
        assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
    }

    #[test]
    fn the_origin_refuses_an_edge_certificate_from_another_ca() {
        let pki = pki();
        let other_ca = generate_ca("another CA", year()).unwrap();
        let (identity, _) = &pki.edges[0];
        let impostor = issue_edge(&other_ca, identity, year()).unwrap();
        // The impostor knows the real CA (it is public), so it trusts the origin; its certificate is not.
        let error = handshake(raw_client(&pki.ca, Some(&impostor)), origin_server(&pki), "localhost").unwrap_err();
        assert!(
            matches!(
                error,
                Failed::Server(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
            ),
            "{error:?}"
        );
    }

    #[test]
    fn the_origin_refuses_a_client_without_a_certificate() {
        let pki = pki();
        let error = handshake(raw_client(&pki.ca, None), origin_server(&pki), "localhost").unwrap_err();
        assert!(
            matches!(error, Failed::Server(rustls::Error::NoCertificatesPresented)),
            "{error:?}"
        );
    }

    #[test]
    fn the_origin_refuses_another_application_protocol() {
        let pki = pki();
        let client = client_config(&pem(&pki.ca, &pki.edges[0].1), b"h3").unwrap();
        let error = handshake(client, origin_server(&pki), "localhost").unwrap_err();
        assert!(
            matches!(error, Failed::Server(rustls::Error::NoApplicationProtocol)),
            "{error:?}"
        );
    }

    #[test]
    fn an_origin_certificate_cannot_pose_as_an_edge() {
        let pki = pki();
        let error = handshake(raw_client(&pki.ca, Some(&pki.origin)), origin_server(&pki), "localhost").unwrap_err();
        assert!(
            matches!(error, Failed::Server(rustls::Error::InvalidCertificate(_))),
            "{error:?}"
        );
        assert!(matches!(
            client_config(&pem(&pki.ca, &pki.origin), ALPN),
            Err(TlsError::NotTrusted { .. })
        ));
    }

    #[test]
    fn an_edge_refuses_an_origin_signed_by_another_ca() {
        let pki = pki();
        let other_ca = generate_ca("another CA", year()).unwrap();
        let impostor = issue_origin(&other_ca, &origin_names(), year()).unwrap();
        let server = server_config(&pem(&other_ca, &impostor), ALPN).unwrap();
        let client = client_config(&pem(&pki.ca, &pki.edges[0].1), ALPN).unwrap();
        let error = handshake(client, server, "localhost").unwrap_err();
        assert!(
            matches!(
                error,
                Failed::Client(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_ca_bundle_lets_old_and_new_certificates_meet_during_a_rotation() {
        let old = pki();
        let new_ca = generate_ca("next CA", year()).unwrap();
        let new_edge = issue_edge(&new_ca, &old.edges[0].0, year()).unwrap();
        let bundle = format!("{}{}", old.ca.cert_pem, new_ca.cert_pem);
        let server = server_config(
            &TlsPem::from_memory(bundle.clone(), old.origin.cert_pem.clone(), old.origin.key_pem.clone()),
            ALPN,
        )
        .unwrap();
        let client = client_config(
            &TlsPem::from_memory(bundle, new_edge.cert_pem.clone(), new_edge.key_pem.clone()),
            ALPN,
        )
        .unwrap();
        let server = handshake(client, server, "localhost").unwrap();
        assert_eq!(
            EdgeIdentity::from_certificate(&server.peer_certificates().unwrap()[0]).unwrap(),
            old.edges[0].0
        );
    }

    #[test]
    fn configurations_refuse_inputs_that_cannot_work_and_say_which() {
        let pki = pki();
        let (_, edge_1) = &pki.edges[0];
        let (_, edge_2) = &pki.edges[1];

        let mismatched = TlsPem::from_memory(pki.ca.cert_pem.clone(), edge_1.cert_pem.clone(), edge_2.key_pem.clone());
        let error = client_config(&mismatched, ALPN).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the key PEM is not the private key of the certificate in the certificate PEM"
        );

        let key_as_cert = TlsPem::from_memory(pki.ca.cert_pem.clone(), edge_1.key_pem.clone(), edge_1.key_pem.clone());
        assert!(matches!(
            client_config(&key_as_cert, ALPN),
            Err(TlsError::NoCertificate(from)) if from == "the certificate PEM"
        ));

        let cert_as_key = TlsPem::from_memory(
            pki.ca.cert_pem.clone(),
            edge_1.cert_pem.clone(),
            edge_1.cert_pem.clone(),
        );
        assert!(matches!(
            client_config(&cert_as_key, ALPN),
            Err(TlsError::NoKey(from)) if from == "the key PEM"
        ));

        let no_ca = TlsPem::from_memory("", edge_1.cert_pem.clone(), edge_1.key_pem.clone());
        assert!(matches!(
            server_config(&no_ca, ALPN),
            Err(TlsError::NoCertificate(from)) if from == "the CA PEM"
        ));

        let other_ca = generate_ca("another CA", year()).unwrap();
        let error = client_config(&pem(&other_ca, edge_1), ALPN).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the certificate in the certificate PEM is refused under the CA certificates in the CA PEM: \
             it is not signed by any of them"
        );
        assert!(matches!(
            server_config(&pem(&other_ca, &pki.origin), ALPN),
            Err(TlsError::NotTrusted { .. })
        ));

        let now = OffsetDateTime::now_utc();
        let expired = Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        };
        let old_edge = issue_edge(&pki.ca, &pki.edges[0].0, expired).unwrap();
        let error = client_config(&pem(&pki.ca, &old_edge), ALPN).unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
    }

    #[test]
    fn issuing_refuses_a_ca_key_that_is_not_the_ca_certificates() {
        let pki = pki();
        let other_ca = generate_ca("another CA", year()).unwrap();
        let broken = CertifiedKey {
            cert_pem: pki.ca.cert_pem.clone(),
            key_pem: other_ca.key_pem,
        };
        assert!(matches!(
            issue_origin(&broken, &origin_names(), year()),
            Err(PkiError::CaKeyMismatch)
        ));
        assert!(matches!(issue_origin(&pki.ca, &[], year()), Err(PkiError::NoNames)));
    }

    #[test]
    fn debug_output_never_shows_private_keys() {
        let pki = pki();
        let key_body = pki.origin.key_pem.lines().nth(1).unwrap();
        assert!(!format!("{:?}", pki.origin).contains(key_body));
        assert!(!format!("{:?}", pem(&pki.ca, &pki.origin)).contains(key_body));
    }

    fn edges(list: &[(&str, &str)]) -> Vec<EdgeIdentity> {
        list.iter()
            .map(|(name, region)| EdgeIdentity::new(*name, *region).unwrap())
            .collect()
    }

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        let mut names: Vec<String> = paths
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_dev_pki_is_made_once_with_private_keys_and_completed_later() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let two = edges(&[("edge-1", "local"), ("edge-2", "local")]);

        let created = write_dev_pki(&certs, &two).unwrap();
        assert_eq!(
            file_names(&created),
            [
                "ca.key",
                "ca.pem",
                "edge-edge-1.key",
                "edge-edge-1.pem",
                "edge-edge-2.key",
                "edge-edge-2.pem",
                "origin.key",
                "origin.pem"
            ]
        );
        for path in &created {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            if path.extension().unwrap() == "key" {
                assert_eq!(mode, 0o600, "{}", path.display());
            } else {
                assert_eq!(mode & 0o022, 0, "{}: writable by its owner only", path.display());
            }
        }

        let before: Vec<Vec<u8>> = created.iter().map(|path| fs::read(path).unwrap()).collect();
        assert_eq!(write_dev_pki(&certs, &two).unwrap(), Vec::<PathBuf>::new());
        let after: Vec<Vec<u8>> = created.iter().map(|path| fs::read(path).unwrap()).collect();
        assert_eq!(before, after, "a second run changes nothing");
        let ca_key = fs::read(certs.join(CA_KEY_FILE)).unwrap();
        fs::remove_file(certs.join(CA_KEY_FILE)).unwrap();
        assert_eq!(
            write_dev_pki(&certs, &two).unwrap(),
            Vec::<PathBuf>::new(),
            "the CA key is needed only to issue"
        );
        fs::write(certs.join(CA_KEY_FILE), ca_key).unwrap();

        // A third edge is issued by the CA already there, and the origin accepts it.
        let three = edges(&[("edge-1", "local"), ("edge-2", "local"), ("edge-3", "far")]);
        let created = write_dev_pki(&certs, &three).unwrap();
        assert_eq!(file_names(&created), ["edge-edge-3.key", "edge-edge-3.pem"]);
        let server = server_config(
            &TlsPem::read(
                &certs.join(CA_CERT_FILE),
                &certs.join(ORIGIN_CERT_FILE),
                &certs.join(ORIGIN_KEY_FILE),
            )
            .unwrap(),
            ALPN,
        )
        .unwrap();
        let client = client_config(
            &TlsPem::read(
                &certs.join(CA_CERT_FILE),
                &certs.join(edge_cert_file(&three[2])),
                &certs.join(edge_key_file(&three[2])),
            )
            .unwrap(),
            ALPN,
        )
        .unwrap();
        let server = handshake(client, server, "127.0.0.1").unwrap();
        assert_eq!(
            EdgeIdentity::from_certificate(&server.peer_certificates().unwrap()[0]).unwrap(),
            three[2]
        );
    }

    #[test]
    fn the_dev_pki_refuses_half_pairs_orphans_and_duplicate_names() {
        let dir = tempfile::tempdir().unwrap();
        let one = edges(&[("edge-1", "local")]);
        write_dev_pki(dir.path(), &one).unwrap();

        fs::remove_file(dir.path().join(ORIGIN_KEY_FILE)).unwrap();
        let error = write_dev_pki(dir.path(), &one).unwrap_err();
        assert!(matches!(&error, PkiError::HalfPair { present, .. } if present.ends_with(ORIGIN_CERT_FILE)));
        fs::remove_file(dir.path().join(ORIGIN_CERT_FILE)).unwrap();

        fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let error = write_dev_pki(dir.path(), &one).unwrap_err();
        assert!(matches!(&error, PkiError::Orphaned(path) if path.ends_with("edge-edge-1.pem")));
        assert!(
            !dir.path().join(CA_CERT_FILE).exists() && !dir.path().join(ORIGIN_CERT_FILE).exists(),
            "nothing is written when something is refused"
        );

        let twins = edges(&[("edge-1", "eu"), ("edge-1", "us")]);
        assert!(matches!(
            write_dev_pki(dir.path(), &twins),
            Err(PkiError::DuplicateEdge(name)) if name == "edge-1"
        ));
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), &[]).unwrap();
        let missing = dir.path().join("nowhere.pem");
        let error = TlsPem::read(
            &dir.path().join(CA_CERT_FILE),
            &missing,
            &dir.path().join(ORIGIN_KEY_FILE),
        )
        .unwrap_err();
        assert!(matches!(&error, TlsError::Read { path, .. } if *path == missing));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("cannot read the certificate from {}", missing.display())),
            "{message}"
        );
    }
}
