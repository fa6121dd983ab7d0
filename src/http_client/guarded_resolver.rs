//! The model HTTP client's DNS resolver: the system resolver, then a check of every address a
//! name resolved to against the address policies in force, at every connection. A replica
//! checked when it was set can re-resolve later (DNS rebinding) to an address it could never
//! have been set to, such as the cloud metadata service; this refuses that connection.
//!
//! The policies are traits, so this layer knows nothing of the gateway: the gateway registers
//! its replica allow-list with [`enforce`] and every client built by the transport consults the
//! registered policies (see [`GuardedResolver::enforced`]). With none registered (pipelines
//! without a gateway, whose endpoints all come from files) every address is allowed. URLs with
//! an address instead of a name are never resolved: they are checked when they are set.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock, Weak};

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a policy refuses an address: the policy's own error (this layer knows nothing of the
/// policies, which live above it).
pub(crate) type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// Which resolved addresses a client may connect to.
pub(crate) trait AddressPolicy: Send + Sync {
    /// `Err(why)` when connecting to `ip`, one of the addresses `host` resolved to, is refused.
    fn permits(&self, host: &str, ip: IpAddr) -> Result<(), Refusal>;
}

/// A connection refused because a name resolved to a refused address (carried by the
/// resolver's `io::Error`, kind `PermissionDenied`).
///
/// The policy's reason is part of the message and deliberately not a `source`: the model
/// client writes a failed call's message as the reqwest error followed by its whole source
/// chain, which would repeat it.
#[derive(Debug, thiserror::Error)]
#[error("connection to {host} refused: it resolves to {ip}: {why}")]
pub(crate) struct ConnectionRefused {
    /// The name.
    pub host: String,
    /// The refused address it resolved to.
    pub ip: IpAddr,
    /// The policy's reason.
    pub why: Refusal,
}

/// Policies registered by [`enforce`]; each lives as long as its owner keeps it.
static ENFORCED: RwLock<Vec<Weak<dyn AddressPolicy>>> = RwLock::new(Vec::new());

/// Makes every client built by the transport check resolved addresses against `policy` for
/// as long as the policy is alive. With several registered (several gateways in one process),
/// an address must satisfy all of them.
pub(crate) fn enforce(policy: Weak<dyn AddressPolicy>) {
    let mut enforced = ENFORCED.write().unwrap_or_else(|e| e.into_inner());
    enforced.retain(|p| p.strong_count() > 0);
    enforced.push(policy);
}

fn enforced_now() -> Vec<Arc<dyn AddressPolicy>> {
    ENFORCED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

/// How names become addresses (the system resolver, or a fake in tests).
pub(crate) type Lookup =
    Arc<dyn Fn(&str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> + Send + Sync>;

/// A [`Resolve`] that refuses a name when any address it resolves to is refused by a policy.
#[derive(Clone)]
pub(crate) struct GuardedResolver {
    /// `None`: the policies registered with [`enforce`] at the time of each resolution.
    policy: Option<Arc<dyn AddressPolicy>>,
    lookup: Lookup,
}

impl GuardedResolver {
    /// The system resolver checked against the policies registered with [`enforce`].
    pub(crate) fn enforced() -> GuardedResolver {
        GuardedResolver {
            policy: None,
            lookup: system_lookup(),
        }
    }

    /// The system resolver checked against `policy` alone.
    #[cfg(test)]
    pub(crate) fn new(policy: Arc<dyn AddressPolicy>) -> GuardedResolver {
        GuardedResolver {
            policy: Some(policy),
            lookup: system_lookup(),
        }
    }

    /// The same checks over another way of resolving names.
    #[cfg(test)]
    pub(crate) fn with_lookup(mut self, lookup: Lookup) -> GuardedResolver {
        self.lookup = lookup;
        self
    }

    /// Resolves `host` and checks every address.
    pub(crate) async fn resolve_checked(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let addresses = (self.lookup)(host).await?;
        let policies = match &self.policy {
            Some(policy) => vec![policy.clone()],
            None => enforced_now(),
        };
        for ip in &addresses {
            for policy in &policies {
                policy.permits(host, *ip).map_err(|why| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        ConnectionRefused {
                            host: host.to_string(),
                            ip: *ip,
                            why,
                        },
                    )
                })?;
            }
        }
        Ok(addresses)
    }
}

fn system_lookup() -> Lookup {
    Arc::new(|host: &str| {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    })
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addresses = resolver.resolve_checked(name.as_str()).await?;
            // Port 0: the client puts the URL's port (or the scheme's) in its place.
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses loopback addresses.
    struct NoLoopback;

    impl AddressPolicy for NoLoopback {
        fn permits(&self, _host: &str, ip: IpAddr) -> Result<(), Refusal> {
            if ip.is_loopback() {
                Err("loopback is not allowed".into())
            } else {
                Ok(())
            }
        }
    }

    struct AllowAll;

    impl AddressPolicy for AllowAll {
        fn permits(&self, _: &str, _: IpAddr) -> Result<(), Refusal> {
            Ok(())
        }
    }

    /// A name that answers with each list of addresses in turn (the last one for ever), as a
    /// rebinding DNS server would.
    fn rebinding(answers: Vec<Vec<IpAddr>>) -> Lookup {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Arc::new(move |_host: &str| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)].clone();
            Box::pin(async move { Ok(answer) })
        })
    }

    struct NoLinkLocal;

    impl AddressPolicy for NoLinkLocal {
        fn permits(&self, _: &str, ip: IpAddr) -> Result<(), Refusal> {
            match ip {
                IpAddr::V4(v4) if v4.is_link_local() => Err("link-local".into()),
                _ => Ok(()),
            }
        }
    }

    /// The client built with the resolver never connects to a refused address: a loopback
    /// listener sees no connection while the policy forbids loopback, and serves once it
    /// does not.
    #[tokio::test]
    async fn a_client_does_not_connect_to_a_refused_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        // `localhost` may also resolve to ::1 where nothing listens: only 127.0.0.1 answers.
        let localhost: Lookup =
            Arc::new(|_: &str| Box::pin(async { Ok(vec![IpAddr::from([127, 0, 0, 1])]) }));
        let url = format!("http://localhost:{port}/");
        let client = |policy: Arc<dyn AddressPolicy>| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(crate::tls::client::default_client_config())
                .no_proxy()
                .dns_resolver(GuardedResolver::new(policy).with_lookup(localhost.clone()))
                .build()
                .unwrap()
        };

        let err = client(Arc::new(NoLoopback))
            .get(&url)
            .send()
            .await
            .unwrap_err();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(message.contains("loopback is not allowed"), "{message}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);

        let answer = client(Arc::new(AllowAll)).get(&url).send().await.unwrap();
        assert_eq!(answer.text().await.unwrap(), "ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// The system resolver is checked too: `localhost` resolves to loopback only.
    #[tokio::test]
    async fn the_system_resolver_is_checked() {
        let refused = GuardedResolver::new(Arc::new(NoLoopback))
            .resolve_checked("localhost")
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert!(refused.to_string().contains("loopback"), "{refused}");
        let addresses = GuardedResolver::new(Arc::new(AllowAll))
            .resolve_checked("localhost")
            .await
            .unwrap();
        assert!(addresses.iter().all(IpAddr::is_loopback), "{addresses:?}");
    }

    /// A name that resolved to an allowed address, then re-resolves to the metadata address,
    /// is refused the second time: the check is made at every resolution. (Only the resolver
    /// runs: nothing connects anywhere.)
    #[tokio::test]
    async fn a_rebound_name_is_refused() {
        let resolver = GuardedResolver::new(Arc::new(NoLinkLocal)).with_lookup(rebinding(vec![
            vec![IpAddr::from([10, 0, 0, 5])],
            vec![
                IpAddr::from([10, 0, 0, 5]),
                IpAddr::from([169, 254, 169, 254]),
            ],
        ]));
        assert_eq!(
            resolver.resolve_checked("models.test").await.unwrap(),
            vec![IpAddr::from([10, 0, 0, 5])]
        );
        let err = resolver.resolve_checked("models.test").await.unwrap_err();
        assert!(
            err.to_string().contains("169.254.169.254: link-local"),
            "{err}"
        );
        // The reason is in the message once: the model client appends every source of a
        // failed call's error to its message.
        assert!(std::error::Error::source(&err).is_none());
        // Through the `Resolve` interface the client uses, too.
        let err = match Resolve::resolve(&resolver, "models.test".parse().unwrap()).await {
            Ok(_) => panic!("resolved to a link-local address"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("refused"), "{err}");
    }

    /// Refuses one name.
    struct RefuseName(&'static str);

    impl AddressPolicy for RefuseName {
        fn permits(&self, host: &str, _: IpAddr) -> Result<(), Refusal> {
            if host == self.0 {
                Err("refused by name".into())
            } else {
                Ok(())
            }
        }
    }

    /// Registered policies apply while they live, all of them, and no longer. (Other tests of
    /// this binary may register policies of their own: none refuses this name and address.)
    #[tokio::test]
    async fn enforced_policies_live_with_their_owner() {
        let lookup = rebinding(vec![vec![IpAddr::from([192, 0, 2, 1])]]);
        let resolver = GuardedResolver::enforced().with_lookup(lookup);
        let allow: Arc<dyn AddressPolicy> = Arc::new(AllowAll);
        enforce(Arc::downgrade(&allow));
        let policy: Arc<dyn AddressPolicy> = Arc::new(RefuseName("enforced.test"));
        enforce(Arc::downgrade(&policy));
        let err = resolver.resolve_checked("enforced.test").await.unwrap_err();
        assert!(err.to_string().contains("refused by name"), "{err}");
        assert!(resolver.resolve_checked("other.test").await.is_ok());
        drop(policy);
        assert!(resolver.resolve_checked("enforced.test").await.is_ok());
    }
}
