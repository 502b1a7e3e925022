//! HTTP: certificates from an ACME CA (`[server.acme]`), ordered with `instant-acme` and
//! proved with TLS-ALPN-01 on the listening port itself: a handshake that offers the
//! `acme-tls/1` protocol gets the challenge certificate, every other one the current
//! certificate. The account and the certificate are kept in `cache_dir` (mode 0700), so a
//! restart serves the cached certificate and orders nothing; a renewal starts at two thirds of
//! the certificate's life, retries with backoff, and swaps the new certificate in for new
//! handshakes while open connections keep theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::AcmeSettings;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// The first wait after a failed order; it doubles up to `MOST_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MOST_BACKOFF: Duration = Duration::from_secs(3600);
/// The longest sleep between two looks at the certificate's age.
const LOOK_EVERY: Duration = Duration::from_secs(3600);

/// What `/metrics` shows of the certificates.
#[derive(Debug, Default)]
pub(crate) struct AcmeStatus {
    /// Unix seconds the served certificate expires at; 0 before the first one.
    expires_at: AtomicI64,
    /// Unix seconds its renewal is due at: two thirds of its life.
    renew_at: AtomicI64,
    orders: AtomicU64,
    /// 1 after a successful order, 0 after a failed one, -1 before any.
    last_outcome: AtomicI64,
}

impl AcmeStatus {
    pub(crate) fn gauges(&self) -> crate::metrics::AcmeGauges {
        crate::metrics::AcmeGauges {
            expires_at: self.expires_at.load(Ordering::Relaxed),
            orders: self.orders.load(Ordering::Relaxed),
            last_succeeded: self.last_outcome.load(Ordering::Relaxed) == 1,
        }
    }
}

/// The certificate in use and the challenges being answered.
#[derive(Debug)]
pub(crate) struct AcmeResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// Served until the first certificate arrives, self-signed: no client trusts it, but a
    /// monitor (`curl -k`) reaches `/healthz`, which says why.
    fallback: Option<Arc<CertifiedKey>>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    pub status: AcmeStatus,
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let challenge = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|protocol| protocol == ACME_TLS_ALPN));
        if challenge {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)
                .cloned();
        }
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .or_else(|| self.fallback.clone())
    }
}

impl AcmeResolver {
    /// A resolver serving the cached certificate when there is one.
    pub(crate) fn start(settings: &AcmeSettings) -> Arc<AcmeResolver> {
        let fallback = rcgen::generate_simple_self_signed(settings.domains.clone())
            .map_err(|err| err.to_string())
            .and_then(|made| certified(&made.cert.pem(), &made.signing_key.serialize_pem()))
            .map(|(key, _)| Arc::new(key))
            .map_err(|err| tracing::warn!(error = %err, "no stand-in certificate"))
            .ok();
        let resolver = Arc::new(AcmeResolver {
            current: RwLock::new(None),
            fallback,
            challenges: Mutex::new(HashMap::new()),
            status: AcmeStatus::default(),
        });
        resolver.status.last_outcome.store(-1, Ordering::Relaxed);
        match cached(&settings.cache_dir) {
            Ok(Some((key, validity))) => {
                resolver.install(key, validity);
                tracing::info!(
                    domains = ?settings.domains,
                    expires_at = validity.not_after,
                    "serving the cached ACME certificate"
                );
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the cached ACME certificate"),
        }
        resolver
    }

    fn install(&self, key: CertifiedKey, validity: Validity) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(key));
        self.status
            .expires_at
            .store(validity.not_after, Ordering::Relaxed);
        self.status
            .renew_at
            .store(validity.renew_at(), Ordering::Relaxed);
    }

    /// Whether a certificate is served.
    pub(crate) fn ready(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// Orders and renews, forever: started with the daemon, stopped with its runtime.
pub(crate) async fn keep_certified(settings: AcmeSettings, resolver: Arc<AcmeResolver>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let due = resolver.status.renew_at.load(Ordering::Relaxed);
        let now = crate::unix_now();
        if resolver.ready() && due > now {
            let wait = Duration::from_secs((due - now) as u64);
            tokio::time::sleep(wait.min(LOOK_EVERY)).await;
            continue;
        }
        resolver.status.orders.fetch_add(1, Ordering::Relaxed);
        match order(&settings, &resolver).await {
            Ok(expires_at) => {
                resolver.status.last_outcome.store(1, Ordering::Relaxed);
                tracing::info!(domains = ?settings.domains, expires_at, "ordered an ACME certificate");
                backoff = FIRST_BACKOFF;
            }
            Err(err) => {
                resolver.status.last_outcome.store(0, Ordering::Relaxed);
                tracing::error!(
                    error = %err,
                    directory = %settings.directory,
                    retry_in_secs = backoff.as_secs(),
                    "ordering an ACME certificate failed; {}",
                    if resolver.ready() { "the current certificate is served meanwhile" } else { "no certificate is served yet" }
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MOST_BACKOFF);
            }
        }
    }
}

/// One order: the account (cached), TLS-ALPN-01 for each name, the certificate, cached and
/// installed. Answers its expiry.
async fn order(settings: &AcmeSettings, resolver: &AcmeResolver) -> Result<i64, String> {
    let registered = account(settings).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|domain| Identifier::Dns(domain.clone()))
        .collect();
    let mut order = match registered.new_order(&NewOrder::new(&identifiers)).await {
        Ok(order) => order,
        // The CA no longer knows the cached account (a test CA restarted, an account
        // deactivated): a new one, once.
        Err(err) if err.to_string().contains("accountDoesNotExist") => {
            tracing::warn!("the ACME CA does not know the cached account; making a new one");
            let _ = std::fs::remove_file(settings.cache_dir.join("account.json"));
            account(settings)
                .await?
                .new_order(&NewOrder::new(&identifiers))
                .await
                .map_err(|err| format!("new order: {err}"))?
        }
        Err(err) => return Err(format!("new order: {err}")),
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|err| format!("authorization: {err}"))?;
        if authorization.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authorization
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or("the CA offers no tls-alpn-01 challenge")?;
        let name = challenge.identifier().to_string().to_ascii_lowercase();
        let proof = challenge_certificate(&name, challenge.key_authorization().digest().as_ref())?;
        resolver
            .challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, Arc::new(proof));
        challenge
            .set_ready()
            .await
            .map_err(|err| format!("challenge: {err}"))?;
    }
    let retries = RetryPolicy::default().timeout(Duration::from_secs(120));
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|err| format!("waiting for the order: {err}"))?;
    resolver
        .challenges
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    if status != OrderStatus::Ready {
        return Err(format!("the order is {status:?}, not ready"));
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|err| format!("finalize: {err}"))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(|err| format!("certificate: {err}"))?;
    let (key, validity) = certified(&chain_pem, &key_pem)?;
    write_private(&settings.cache_dir, "key.pem", key_pem.as_bytes())?;
    write_private(&settings.cache_dir, "cert.pem", chain_pem.as_bytes())?;
    resolver.install(key, validity);
    Ok(validity.not_after)
}

/// The cached account, else a new one, cached. The key never reaches a log.
async fn account(settings: &AcmeSettings) -> Result<Account, String> {
    let builder = match &settings.ca_file {
        Some(roots) => Account::builder_with_root(roots),
        None => Account::builder(),
    }
    .map_err(|err| format!("HTTP client: {err}"))?;
    let path = settings.cache_dir.join("account.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let credentials: AccountCredentials =
            serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        return builder
            .from_credentials(credentials)
            .await
            .map_err(|err| format!("account: {err}"));
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|err| format!("new account: {err}"))?;
    let text = serde_json::to_vec(&credentials).map_err(|err| err.to_string())?;
    write_private(&settings.cache_dir, "account.json", &text)?;
    Ok(account)
}

/// The self-signed certificate that answers TLS-ALPN-01 for `name` (RFC 8737): the
/// `acmeIdentifier` extension holds the key authorization's digest.
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|err| err.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|err| err.to_string())?;
    let cert = params.self_signed(&key).map_err(|err| err.to_string())?;
    // Not through `CertifiedKey::from_der`: its check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension the validator looks for.
    let der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|err| format!("key: {err}"))?;
    let signing = crate::crypto::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|err| format!("key: {err}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// When a certificate is valid, unix seconds.
#[derive(Debug, Clone, Copy)]
struct Validity {
    not_before: i64,
    not_after: i64,
}

impl Validity {
    /// Two thirds of the way through.
    fn renew_at(self) -> i64 {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

/// A chain and key as rustls serves them, and the leaf's validity.
fn certified(chain_pem: &str, key_pem: &str) -> Result<(CertifiedKey, Validity), String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("certificate: {err}"))?;
    let leaf = chain.first().ok_or("no certificate in the chain")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|err| format!("certificate: {err}"))?;
    let validity = Validity {
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    };
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|err| format!("key: {err}"))?;
    let key = CertifiedKey::from_der(chain, key, &crate::crypto::provider())
        .map_err(|err| format!("certificate and key: {err}"))?;
    Ok((key, validity))
}

/// The cached certificate, when there is one.
fn cached(dir: &Path) -> Result<Option<(CertifiedKey, Validity)>, String> {
    let (Ok(chain), Ok(key)) = (
        std::fs::read_to_string(dir.join("cert.pem")),
        std::fs::read_to_string(dir.join("key.pem")),
    ) else {
        return Ok(None);
    };
    certified(&chain, &key).map(Some)
}

/// Writes `name` in `dir` (made 0700) with mode 0600, replacing it whole.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let failed = |err: std::io::Error| format!("{}: {err}", dir.join(name).display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    let pending = dir.join(format!("{name}.new"));
    let _ = std::fs::remove_file(&pending);
    crate::files::write_private_new(&pending, bytes).map_err(failed)?;
    std::fs::rename(&pending, dir.join(name)).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_certificate_names_the_domain_and_carries_the_digest() {
        let certified = challenge_certificate("collect.studio.example", &[7; 32]).expect("cert");
        let (_, parsed) = x509_parser::parse_x509_certificate(&certified.cert[0]).expect("parse");
        let acme_identifier = parsed
            .extensions()
            .iter()
            .find(|extension| extension.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(acme_identifier.critical);
        assert!(acme_identifier.value.ends_with(&[7; 32]));
    }
}
