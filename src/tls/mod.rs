//! TLS, both ways, with one stack (rustls and its ring provider, as the listeners always used):
//! the listener that serves HTTPS ([`TlsListener`]) and the configuration of outbound
//! connections ([`client`]). A leaf: it imports nothing of the crate.

pub mod client;
mod listener;

pub use listener::TlsListener;

/// Makes ring the process's default rustls provider, for code that builds a TLS client without
/// naming one (`reqwest::Client::new()`). Idempotent; Streamgate's own configurations always
/// name their provider.
pub fn install_default_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}
