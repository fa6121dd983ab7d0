//! The process's outbound HTTP client, shared by model protocols, the gateway's proxy and the
//! schema-registry client: one reqwest client (connection pool) per process (and one per
//! gateway worker thread), no redirects (an endpoint that redirects is misconfigured, and
//! following it could leak headers elsewhere), no proxy from the environment, and every
//! resolved address checked against the replica allow-list ([`guarded_resolver`]).
//!
//! HTTPS verifies servers against the web PKI roots ([`crate::tls::client`]); an endpoint with
//! its own `tls` settings gets a client of its own ([`client_with_tls`]).
//!
//! A low, neutral module: it knows nothing of models, codecs or the gateway, so each of them
//! can use it without depending on the others.

pub(crate) mod guarded_resolver;

use std::sync::OnceLock;
use std::time::Duration;

/// The HTTP client for this thread: the gateway worker's own (see
/// [`use_own_client_on_this_thread`]) or the process's shared one. Cloning it is cheap (it
/// is a handle on the pool).
pub fn client() -> reqwest::Client {
    THREAD_CLIENT
        .with(|own| own.borrow().clone())
        .unwrap_or_else(|| shared_client().clone())
}

/// Gives the calling thread a client and connection pool of its own. A gateway worker runs a
/// single-threaded runtime: with its own pool, the connections to the models are driven by
/// the same thread as the requests that use them, so no request hops between threads.
pub fn use_own_client_on_this_thread() {
    THREAD_CLIENT.with(|own| *own.borrow_mut() = Some(new_client()));
}

thread_local! {
    static THREAD_CLIENT: std::cell::RefCell<Option<reqwest::Client>> =
        const { std::cell::RefCell::new(None) };
}

fn shared_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(new_client)
}

fn new_client() -> reqwest::Client {
    builder(crate::tls::client::default_client_config())
        .build()
        .expect("HTTP client with static settings")
}

/// A client of its own for an endpoint with TLS settings (same limits and address checks as
/// the shared one). Errors name the setting and file.
pub fn client_with_tls(
    options: &crate::tls::client::ClientTlsOptions,
) -> Result<reqwest::Client, crate::tls::client::ClientTlsError> {
    let tls = crate::tls::client::client_config(options)?;
    Ok(builder(tls)
        .build()
        .expect("HTTP client with static settings"))
}

fn builder(tls: tokio_rustls::rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(256)
        // Resolved addresses are checked against the gateway's replica allow-list at every
        // connection, so a name cannot re-resolve to the metadata service (DNS rebinding).
        .dns_resolver(guarded_resolver::GuardedResolver::enforced())
}
