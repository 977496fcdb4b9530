//! TLS for outbound HTTP (benchmarks' and tests' clients, later REST
//! upstreams): rustls on the ring provider, installed once per process.

/// Installs ring as the process-wide rustls provider; calling it again, or
/// after another provider was installed, changes nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
