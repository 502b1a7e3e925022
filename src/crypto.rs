//! Crypto: the process's one TLS crypto provider, for the listener, ACME and the push client.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// ring, chosen explicitly so no feature unification can make rustls pick another at run time.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
