//! The development PKI: a CA, origin and edge certificates issued by it, and [`write_dev_pki`], which
//! makes what a laptop needs into a folder. Behind the `dev-pki` feature: the tools and tests use it,
//! neither the origin nor the edge binary does.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::*;

/// Allowed clock difference: certificates start this long before they are made, so that a peer whose
/// clock lags a little accepts a fresh certificate at once.
const CLOCK_SKEW: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a key or certificate failed: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("the CA certificate cannot be used to issue: {0}")]
    CaCertificate(#[source] rcgen::Error),
    #[error("the CA key cannot be read: {0}")]
    CaKey(#[source] rcgen::Error),
    #[error("the CA key is not the key of the CA certificate")]
    CaKeyMismatch,
    #[error("an origin certificate needs at least one name")]
    NoNames,
    #[error("using the CA in {cert} and {key}: {source}")]
    CaFiles {
        cert: PathBuf,
        key: PathBuf,
        source: Box<PkiError>,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{present} exists without {missing}: remove {present} to have both made again")]
    HalfPair { present: PathBuf, missing: PathBuf },
    #[error("{0} exists but the CA that signed it does not: remove it to have it issued by a new CA")]
    Orphaned(PathBuf),
    #[error("two edges are named {0:?}; their files would be the same")]
    DuplicateEdge(String),
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid for `length` from now; it starts a few minutes earlier, so a peer whose clock lags a little
    /// accepts it at once.
    pub fn starting_now(length: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now.saturating_sub(CLOCK_SKEW),
            not_after: now.saturating_add(length),
        }
    }
}

/// A certificate and its private key, both PEM. `Debug` shows the certificate only.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A new self-signed CA (ECDSA P-256) that may sign end-entity certificates only (path length 0).
pub fn generate_ca(common_name: &str, validity: Validity) -> Result<CertifiedKey, PkiError> {
    let mut params = base_params(common_name, validity);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(PkiError::Generate)?;
    let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// An origin (server) certificate signed by `ca`, valid for `names`: DNS names or IP addresses
/// (`localhost`, `127.0.0.1`, `::1`); extended key usage `serverAuth`.
pub fn issue_origin(ca: &CertifiedKey, names: &[String], validity: Validity) -> Result<CertifiedKey, PkiError> {
    let first = names.first().ok_or(PkiError::NoNames)?;
    let mut params = base_params(first, validity);
    params.subject_alt_names = CertificateParams::new(names.to_vec())
        .map_err(PkiError::Generate)?
        .subject_alt_names;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(ca, params)
}

/// An edge (client) certificate signed by `ca` that names `edge` (see the module documentation);
/// extended key usage `clientAuth`.
pub fn issue_edge(ca: &CertifiedKey, edge: &EdgeIdentity, validity: Validity) -> Result<CertifiedKey, PkiError> {
    let mut params = base_params(edge.name(), validity);
    let uri = edge.uri().try_into().map_err(PkiError::Generate)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(ca, params)
}

/// Parameters every certificate here starts from: a common name, the validity, an ECDSA key usage.
fn base_params(common_name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

fn issue(ca: &CertifiedKey, params: CertificateParams) -> Result<CertifiedKey, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(PkiError::CaKey)?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca.cert_pem).map_err(PkiError::CaCertificate)?;
    if !ca_key_matches(&ca.cert_pem, &ca_key)? {
        return Err(PkiError::CaKeyMismatch);
    }
    // rcgen 0.13 signs with a `Certificate`: rebuilding the CA from its own subject and key gives the
    // same issuer name and key identifier, which is all that an issued certificate takes from it.
    let issuer = ca_params.self_signed(&ca_key).map_err(PkiError::CaCertificate)?;
    let key = KeyPair::generate().map_err(PkiError::Generate)?;
    let cert = params.signed_by(&key, &issuer, &ca_key).map_err(PkiError::Generate)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Whether the CA certificate's public key is the public half of `key`.
fn ca_key_matches(cert_pem: &str, key: &KeyPair) -> Result<bool, PkiError> {
    let unparsable = || PkiError::CaCertificate(rcgen::Error::CouldNotParseCertificate);
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| unparsable())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| unparsable())?;
    Ok(cert.public_key().raw == key.public_key_der().as_slice())
}

// ---------------------------------------------------------------------------------------------------
// The development PKI folder

/// A certificate file and its key file.
struct PemPair {
    cert: PathBuf,
    key: PathBuf,
}

impl PemPair {
    fn new(dir: &Path, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        Self {
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// Whether both files exist; an error when only one does.
    fn exists(&self) -> Result<bool, PkiError> {
        match (exists(&self.cert)?, exists(&self.key)?) {
            (true, true) => Ok(true),
            (false, false) => Ok(false),
            (true, false) => Err(PkiError::HalfPair {
                present: self.cert.clone(),
                missing: self.key.clone(),
            }),
            (false, true) => Err(PkiError::HalfPair {
                present: self.key.clone(),
                missing: self.cert.clone(),
            }),
        }
    }

    fn read(&self) -> Result<CertifiedKey, PkiError> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| PkiError::Io {
                action: "reading",
                path: path.to_owned(),
                source,
            })
        };
        Ok(CertifiedKey {
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
        })
    }

    /// Writes both files, which must not exist yet: the key with mode 0600, then the certificate.
    fn write(&self, pair: &CertifiedKey) -> Result<(), PkiError> {
        write_new(&self.key, &pair.key_pem, 0o600)?;
        if let Err(error) = write_new(&self.cert, &pair.cert_pem, 0o644) {
            // Leave no key without its certificate, which the next run would refuse. If this removal
            // fails too, that refusal names the file; the write error is the one worth reporting.
            let _ = fs::remove_file(&self.key);
            return Err(error);
        }
        Ok(())
    }
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(|source| PkiError::Io {
        action: "checking",
        path: path.to_owned(),
        source,
    })
}

#[cfg_attr(not(unix), allow(unused_variables))]
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    options
        .open(path)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        .map_err(|source| PkiError::Io {
            action: "writing",
            path: path.to_owned(),
            source,
        })
}

/// Makes the development PKI in `dir`, creating only what is missing, and returns the files it created
/// (none when everything was there).
///
/// Files, all PEM: [`CA_CERT_FILE`] and [`CA_KEY_FILE`]; [`ORIGIN_CERT_FILE`] and [`ORIGIN_KEY_FILE`]
/// for [`DEV_ORIGIN_NAMES`]; per edge, [`edge_cert_file`] and [`edge_key_file`]. Keys are written with
/// mode 0600. Validity: [`DEV_CA_VALIDITY`] and [`DEV_LEAF_VALIDITY`].
///
/// A missing certificate is issued by the CA already in `dir` (whose key is read only then). Refused,
/// before anything is written: a certificate without its key or a key without its certificate, and
/// certificates whose CA is gone (they would not chain to a new one). To renew a certificate, delete
/// its two files; to start over, delete them all.
pub fn write_dev_pki(dir: &Path, edges: &[EdgeIdentity]) -> Result<Vec<PathBuf>, PkiError> {
    let mut names = HashSet::new();
    if let Some(duplicate) = edges.iter().find(|edge| !names.insert(edge.name())) {
        return Err(PkiError::DuplicateEdge(duplicate.name().to_owned()));
    }

    let ca_files = PemPair::new(dir, CA_CERT_FILE, CA_KEY_FILE);
    let mut leaves = vec![(PemPair::new(dir, ORIGIN_CERT_FILE, ORIGIN_KEY_FILE), None)];
    leaves.extend(
        edges
            .iter()
            .map(|edge| (PemPair::new(dir, edge_cert_file(edge), edge_key_file(edge)), Some(edge))),
    );

    let mut missing = Vec::new();
    let mut issued = None;
    for (files, edge) in &leaves {
        if files.exists()? {
            issued.get_or_insert(&files.cert);
        } else {
            missing.push((files, *edge));
        }
    }
    if missing.is_empty() && exists(&ca_files.cert)? {
        // Nothing to sign: the CA key may as well be kept elsewhere.
        return Ok(Vec::new());
    }
    let ca_exists = ca_files.exists()?;
    if let (false, Some(cert)) = (ca_exists, issued) {
        return Err(PkiError::Orphaned(cert.clone()));
    }

    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        action: "creating",
        path: dir.to_owned(),
        source,
    })?;
    let mut created = Vec::new();
    let ca = if ca_exists {
        ca_files.read()?
    } else {
        let ca = generate_ca(DEV_CA_NAME, Validity::starting_now(DEV_CA_VALIDITY))?;
        ca_files.write(&ca)?;
        created.extend([ca_files.cert.clone(), ca_files.key.clone()]);
        ca
    };
    let in_ca_files = |source: PkiError| PkiError::CaFiles {
        cert: ca_files.cert.clone(),
        key: ca_files.key.clone(),
        source: Box::new(source),
    };
    let validity = Validity::starting_now(DEV_LEAF_VALIDITY);
    for (files, edge) in missing {
        let issued = match edge {
            Some(edge) => issue_edge(&ca, edge, validity),
            None => {
                let names: Vec<String> = DEV_ORIGIN_NAMES.iter().map(|name| name.to_string()).collect();
                issue_origin(&ca, &names, validity)
            }
        }
        .map_err(|error| match error {
            PkiError::CaKey(_) | PkiError::CaCertificate(_) | PkiError::CaKeyMismatch => in_ca_files(error),
            other => other,
        })?;
        files.write(&issued)?;
        created.extend([files.cert.clone(), files.key.clone()]);
    }
    Ok(created)
}
