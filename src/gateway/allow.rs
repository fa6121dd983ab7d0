//! Which model endpoints the admin API may point a version at. A replica URL set at run time
//! reaches the gateway's network position, so it is checked against the gateway file's
//! `replica_allow_list` (networks and host names). Link-local and cloud metadata addresses are
//! refused unless an entry names them explicitly: a broad entry such as `0.0.0.0/0` does not
//! open them.

use std::net::IpAddr;

use ipnet::IpNet;

/// The parsed allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    networks: Vec<IpNet>,
    /// Exact host names, or `*.suffix` patterns (stored as `.suffix`).
    hosts: Vec<String>,
}

/// Addresses of cloud instance metadata services (beyond link-local 169.254.0.0/16).
const METADATA: &[&str] = &["fd00:ec2::254", "100.100.100.200"];

impl AllowList {
    /// Parses entries: a network (`10.0.0.0/8`, `fd00::/8`), an address (`127.0.0.1`), a host
    /// name (`models.internal`) or a suffix pattern (`*.svc.cluster.local`).
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in entries {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                list.networks.push(net.trunc());
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                list.networks.push(IpNet::from(ip));
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                if !is_host_name(suffix) {
                    return Err(format!(
                        "replica_allow_list: {entry:?} is not a host pattern"
                    ));
                }
                list.hosts.push(format!(".{}", suffix.to_ascii_lowercase()));
            } else if is_host_name(entry) {
                list.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "replica_allow_list: {entry:?} is not a network, address, host name or *.suffix"
                ));
            }
        }
        Ok(list)
    }

    /// Whether nothing is allowed (admin replica changes are then refused).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.hosts.is_empty()
    }

    /// Checks a replica URL: scheme, no credentials, and its host (and every address it
    /// resolves to now) against the list.
    pub async fn check(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url:?}: only http and https replicas"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("replica URLs cannot carry credentials".to_string());
        }
        let Some(host) = parsed.host_str() else {
            return Err(format!("{url:?} has no host"));
        };
        let host = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.to_ascii_lowercase()),
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addresses: Vec<IpAddr> = match &host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| format!("{name} does not resolve: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        let named = matches!(&host, Host::Name(n) if self.host_allowed(n));
        for ip in &addresses {
            if is_sensitive(ip) && !self.explicitly_allows(ip) {
                return Err(format!(
                    "{url:?} reaches {ip}, a link-local or metadata address; allow it by name in replica_allow_list to use it"
                ));
            }
            if !named && !self.networks.iter().any(|n| n.contains(ip)) {
                return Err(format!("{url:?} ({ip}) is not in replica_allow_list"));
            }
        }
        Ok(())
    }

    fn host_allowed(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| {
            if h.starts_with('.') {
                name.ends_with(h.as_str())
            } else {
                name == h
            }
        })
    }

    /// An entry inside the sensitive ranges themselves (`169.254.169.254/32`), not a broader
    /// one that happens to contain them.
    fn explicitly_allows(&self, ip: &IpAddr) -> bool {
        self.networks
            .iter()
            .any(|n| n.contains(ip) && is_sensitive(&n.network()) && is_sensitive(&n.broadcast()))
    }
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Link-local (which holds the usual metadata address 169.254.169.254) and other metadata
/// service addresses, also as IPv4-mapped IPv6.
fn is_sensitive(ip: &IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
        v4 => *v4,
    };
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    link_local
        || METADATA
            .iter()
            .any(|m| m.parse::<IpAddr>().is_ok_and(|m| m == ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[tokio::test]
    async fn networks_hosts_and_sensitive_addresses() {
        let broad = list(&["0.0.0.0/0", "::/0"]);
        assert!(broad.check("http://10.1.2.3:8000").await.is_ok());
        for sensitive in [
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.10.1:8000",
            "http://[fe80::1]:8000",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
        ] {
            let err = broad.check(sensitive).await.unwrap_err();
            assert!(err.contains("link-local or metadata"), "{sensitive}: {err}");
        }
        let explicit = list(&["169.254.169.254/32"]);
        assert!(explicit.check("http://169.254.169.254/").await.is_ok());

        let narrow = list(&["10.0.0.0/8", "localhost", "*.models.internal"]);
        assert!(narrow.check("http://10.9.9.9:8000").await.is_ok());
        assert!(narrow.check("http://localhost:8000").await.is_ok());
        let err = narrow.check("http://192.168.1.5:8000").await.unwrap_err();
        assert!(err.contains("not in replica_allow_list"), "{err}");
        let err = narrow.check("http://user:pw@10.0.0.1/").await.unwrap_err();
        assert!(!err.contains("pw"), "{err}");
        assert!(narrow.check("ftp://10.0.0.1/").await.is_err());
        assert!(narrow.check("not a url").await.is_err());
        assert!(AllowList::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(AllowList::parse(&["bad host!".into()]).is_err());
        assert!(list(&[]).is_empty());
    }
}
