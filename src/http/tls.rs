//! HTTP: TLS with rustls (1.2 and 1.3 only), a certificate that can be swapped while serving,
//! and the self-signed certificate of the zero-config instance and `init`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("cannot read TLS private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS certificate {cert} and key {key} do not belong together: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The certificate in use. `reload` swaps it atomically; handshakes in flight keep the old one.
#[derive(Debug)]
pub struct CertResolver {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn load(files: &TlsFiles) -> Result<Arc<CertResolver>, TlsError> {
        let provider = crate::crypto::provider();
        let key = load_certified_key(files, &provider)?;
        Ok(Arc::new(CertResolver {
            files: files.clone(),
            provider,
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Re-reads the files; on any error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.files, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|key| key.clone())
    }
}

/// The server's rustls configuration: TLS 1.3 and 1.2, ALPN h2 then http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    config_with(resolver, false)
}

/// The same, with ACME's certificates: `acme-tls/1` is offered too, for TLS-ALPN-01.
pub(crate) fn acme_server_config(
    resolver: Arc<super::acme::AcmeResolver>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    config_with(resolver, true)
}

fn config_with(
    resolver: Arc<dyn ResolvesServerCert>,
    acme: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::crypto::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError::Generate(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        config
            .alpn_protocols
            .push(super::acme::ACME_TLS_ALPN.to_vec());
    }
    Ok(Arc::new(config))
}

fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |message: String| TlsError::Cert {
        path: files.cert.clone(),
        message,
    };
    if let Err(err) = std::fs::File::open(&files.cert) {
        return Err(cert_error(unreadable(
            &err,
            "the certificate chain (PEM, e.g. certbot's fullchain.pem)",
            "server.tls_cert",
        )));
    }
    if let Err(err) = std::fs::File::open(&files.key) {
        return Err(TlsError::Key {
            path: files.key.clone(),
            message: unreadable(
                &err,
                "the private key (PEM, e.g. certbot's privkey.pem)",
                "server.tls_key",
            ),
        });
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|err| cert_error(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| cert_error(err.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| TlsError::Key {
        path: files.key.clone(),
        message: err.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        message: err.to_string(),
    })
}

/// Why a certificate or key file cannot be opened, and what to do about it.
fn unreadable(err: &std::io::Error, what: &str, key: &str) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            format!("no such file; put {what} there, or set `{key}` to where it is")
        }
        std::io::ErrorKind::PermissionDenied => "permission denied; make it readable by the \
            user the collector runs as (the package's: group tracks-collector, mode 0640)"
            .to_string(),
        _ => err.to_string(),
    }
}

impl TlsError {
    /// The configuration key that names the file at fault.
    pub fn config_key(&self) -> &'static str {
        match self {
            TlsError::Key { .. } => "server.tls_key",
            _ => "server.tls_cert",
        }
    }
}

/// What `generate_self_signed` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedCert {
    pub files: TlsFiles,
    /// The one-off CA that signed the leaf: what clients trust (`curl --cacert`).
    pub ca: PathBuf,
}

/// A local CA and a leaf for localhost, 127.0.0.1 and ::1, written to `dir` as `cert.pem`,
/// `key.pem` (0600) and `ca.pem`. The CA's key is never written: nothing else can be signed
/// with it. rustls refuses a CA certificate as a server certificate, hence two certificates.
pub fn generate_self_signed(dir: &Path, names: &[String]) -> Result<GeneratedCert, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let generate = |err: rcgen::Error| TlsError::Generate(err.to_string());

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tracks-collector local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(generate)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(names.to_vec()).map_err(generate)?;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "tracks-collector");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(generate)?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(generate)?;

    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let ca = dir.join("ca.pem");
    let write = |path: &Path, text: String, private: bool| {
        let result = if private {
            crate::files::write_private_new(path, text.as_bytes())
        } else {
            std::fs::write(path, text)
        };
        result.map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    write(&files.key, leaf_key.serialize_pem(), true)?;
    write(
        &files.cert,
        format!("{}{}", leaf.pem(), ca_cert.pem()),
        false,
    )?;
    write(&ca, ca_cert.pem(), false)?;
    Ok(GeneratedCert { files, ca })
}

/// The names a local certificate is valid for.
pub fn local_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}
