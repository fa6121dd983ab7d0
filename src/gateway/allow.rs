//! Which model endpoints the admin API may point a version at. A replica URL set at run time
//! reaches the gateway's network position, so it is checked against the gateway file's
//! `replica_allow_list` (networks and host names). Link-local and cloud metadata addresses are
//! refused unless an entry names them explicitly: a broad entry such as `0.0.0.0/0` does not
//! open them, whatever the spelling. An IPv6 address that carries an IPv4 address (IPv4-mapped,
//! IPv4-compatible, NAT64, 6to4, Teredo) is checked as both: the IPv6 address and every IPv4 it
//! embeds must be allowed. (Decimal, octal and hex IPv4 spellings such as `http://2852039166/`
//! are turned into dotted addresses by the URL parser before any check.)
//!
//! The list is also enforced when the model client connects (see
//! [`crate::http_client::guarded_resolver`]): every address any name resolves to is
//! checked against the link-local and metadata rule, and a name admitted through the API by
//! its addresses must keep resolving inside the list, so a name cannot be rebound to the
//! metadata service after its check.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock, Weak};

use ipnet::IpNet;

use crate::http_client::guarded_resolver::{self, AddressPolicy, Refusal};

/// Why a `replica_allow_list` entry cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    /// A `*.suffix` entry whose suffix is not a host name.
    #[error("replica_allow_list: {0:?} is not a host pattern")]
    NotAHostPattern(String),
    /// An entry that is nothing the list understands.
    #[error("replica_allow_list: {0:?} is not a network, address, host name or *.suffix")]
    Unrecognised(String),
}

/// Why a replica URL is refused (403 on the admin API).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicaRefused {
    /// Not a URL.
    #[error("{url:?} is not a URL: {source}")]
    NotAUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: <reqwest::Url as std::str::FromStr>::Err,
    },
    /// A scheme other than http or https.
    #[error("{0:?}: only http and https replicas")]
    Scheme(String),
    /// User name or password in the URL.
    #[error("replica URLs cannot carry credentials")]
    Credentials,
    /// No host.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// The host name does not resolve.
    #[error("{name} does not resolve: {source}")]
    Unresolvable {
        /// The host name.
        name: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// An address of the host is refused.
    #[error("{url:?} {source}")]
    Address {
        /// The URL as given.
        url: String,
        /// Why the address is refused.
        #[source]
        source: AddressRefused,
    },
}

/// Why one address is refused. `ip` is the address checked; `form`, when it differs, the IPv4
/// address it embeds that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressRefused {
    /// A link-local or metadata address no entry names explicitly.
    #[error(
        "reaches {}, a link-local or metadata address; allow it by name in replica_allow_list to use it",
        Shown(*.ip, *.form)
    )]
    Sensitive {
        /// The address.
        ip: IpAddr,
        /// The form of it that is sensitive.
        form: IpAddr,
    },
    /// Outside every network of the list.
    #[error("({}) is not in replica_allow_list", Shown(*.ip, *.form))]
    NotListed {
        /// The address.
        ip: IpAddr,
        /// The form of it that is outside the list.
        form: IpAddr,
    },
}

/// An address refused at connect time, with the name that resolved to it.
#[derive(Debug, thiserror::Error)]
#[error("{host} {source}")]
pub(crate) struct HostRefused {
    /// The name.
    pub host: String,
    /// Why its address is refused.
    #[source]
    pub source: AddressRefused,
}

/// An address and, when it is an embedded IPv4 address, the address that embeds it.
struct Shown(IpAddr, IpAddr);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Shown(ip, form) = self;
        if form == ip {
            write!(f, "{ip}")
        } else {
            write!(f, "{ip}, which embeds {form}")
        }
    }
}

/// The parsed allow-list.
#[derive(Debug, Default)]
pub(crate) struct AllowList {
    networks: Vec<IpNet>,
    /// Exact host names, or `*.suffix` patterns (stored as `.suffix`).
    hosts: Vec<String>,
    /// Host names the API admitted by their addresses (not by a name entry): at connect time
    /// every address they resolve to must still be in `networks`.
    admitted: RwLock<HashSet<String>>,
}

/// Addresses of cloud instance metadata services (beyond link-local 169.254.0.0/16).
const METADATA: &[IpAddr] = &[
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

impl AllowList {
    /// Parses entries: a network (`10.0.0.0/8`, `fd00::/8`), an address (`127.0.0.1`), a host
    /// name (`models.internal`) or a suffix pattern (`*.svc.cluster.local`).
    pub(crate) fn parse(entries: &[String]) -> Result<AllowList, AllowListError> {
        let mut list = AllowList::default();
        for entry in entries {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                list.networks.push(net.trunc());
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                list.networks.push(IpNet::from(ip));
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                if !is_host_name(suffix) {
                    return Err(AllowListError::NotAHostPattern(entry.to_string()));
                }
                list.hosts.push(format!(".{}", suffix.to_ascii_lowercase()));
            } else if is_host_name(entry) {
                list.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(AllowListError::Unrecognised(entry.to_string()));
            }
        }
        Ok(list)
    }

    /// Shares the list and, when it has entries, has the model HTTP client enforce it at
    /// connect time for as long as the returned list lives.
    pub(crate) fn enforced_at_connect(self) -> Arc<AllowList> {
        let list = Arc::new(self);
        if !list.is_empty() {
            let policy: Weak<AllowList> = Arc::downgrade(&list);
            guarded_resolver::enforce(policy);
        }
        list
    }

    /// Whether nothing is allowed (admin replica changes are then refused).
    pub(crate) fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.hosts.is_empty()
    }

    /// Checks a replica URL: scheme, no credentials, and its host (and every address it
    /// resolves to now) against the list.
    pub(crate) async fn check(&self, url: &str) -> Result<(), ReplicaRefused> {
        let parsed = reqwest::Url::parse(url).map_err(|source| ReplicaRefused::NotAUrl {
            url: url.to_string(),
            source,
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ReplicaRefused::Scheme(url.to_string()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ReplicaRefused::Credentials);
        }
        let Some(host) = parsed.host_str() else {
            return Err(ReplicaRefused::NoHost(url.to_string()));
        };
        // The URL parser has already written every IPv4 spelling (`2852039166`, `0xa9fea9fe`,
        // `0251.0376.0251.0376`, `169.254.43518`) as a dotted address, and IPv6 in brackets.
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
                .map_err(|source| ReplicaRefused::Unresolvable {
                    name: name.clone(),
                    source,
                })?
                .map(|a| a.ip())
                .collect(),
        };
        let named = matches!(&host, Host::Name(n) if self.host_allowed(n));
        for ip in &addresses {
            self.check_address(*ip, !named)
                .map_err(|source| ReplicaRefused::Address {
                    url: url.to_string(),
                    source,
                })?;
        }
        if let Host::Name(name) = host
            && !named
        {
            self.admitted
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name);
        }
        Ok(())
    }

    /// Checks one address in all its forms (itself and every IPv4 address it embeds): none
    /// may be link-local or metadata unless an entry names that range, and with
    /// `within_networks` every form must be inside an entry.
    fn check_address(&self, ip: IpAddr, within_networks: bool) -> Result<(), AddressRefused> {
        for form in forms(ip) {
            if is_sensitive(form) && !self.explicitly_allows(form) {
                return Err(AddressRefused::Sensitive { ip, form });
            }
            if within_networks && !self.networks.iter().any(|n| n.contains(&form)) {
                return Err(AddressRefused::NotListed { ip, form });
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
    fn explicitly_allows(&self, ip: IpAddr) -> bool {
        self.networks
            .iter()
            .any(|n| n.contains(&ip) && is_sensitive(n.network()) && is_sensitive(n.broadcast()))
    }
}

/// At connect time: every address a name resolves to passes the link-local and metadata rule;
/// a name the API admitted by its addresses must also stay inside the networks. (Names from
/// the gateway and pipeline files are not bound to the list, which is about the API.)
impl AddressPolicy for AllowList {
    fn permits(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        let admitted = self
            .admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&host.to_ascii_lowercase());
        self.check_address(ip, admitted).map_err(|source| {
            Box::new(HostRefused {
                host: host.to_string(),
                source,
            }) as Refusal
        })
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
/// service addresses, as written: an IPv6 address embedding one is caught through [`forms`].
fn is_sensitive(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    link_local || METADATA.contains(&ip)
}

/// The address itself, then every IPv4 address it embeds.
fn forms(ip: IpAddr) -> Vec<IpAddr> {
    let mut forms = vec![ip];
    if let IpAddr::V6(v6) = ip {
        for v4 in embedded_ipv4(v6) {
            if !forms.contains(&IpAddr::V4(v4)) {
                forms.push(IpAddr::V4(v4));
            }
        }
    }
    forms
}

/// The IPv4 addresses an IPv6 address carries, by the well-known translation and tunnelling
/// prefixes. Where the layout depends on the operator (the NAT64 local-use prefix), every
/// layout RFC 6052 allows for it.
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = v6.octets();
    let s = v6.segments();
    let v4 = |a: u8, b: u8, c: u8, d: u8| Ipv4Addr::new(a, b, c, d);
    let last = v4(o[12], o[13], o[14], o[15]);
    match s {
        // IPv4-mapped ::ffff:0:0/96 and IPv4-translated (SIIT) ::ffff:0:0:0/96.
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => vec![last],
        // IPv4-compatible ::/96 (deprecated, still routed by some stacks); not :: or ::1.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => vec![],
        [0, 0, 0, 0, 0, 0, _, _] => vec![last],
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![last],
        // NAT64 local-use prefix 64:ff9b:1::/48 (RFC 8215): the operator picks /48 to /96,
        // with the IPv4 bits laid out around the reserved octet 8 (RFC 6052 section 2.2).
        [0x64, 0xff9b, 1, ..] => vec![
            v4(o[6], o[7], o[9], o[10]),
            v4(o[7], o[9], o[10], o[11]),
            v4(o[9], o[10], o[11], o[12]),
            last,
        ],
        // 6to4 2002::/16: the IPv4 address follows the prefix.
        [0x2002, ..] => vec![v4(o[2], o[3], o[4], o[5])],
        // Teredo 2001::/32: the server's IPv4 address, and the client's (the one traffic
        // reaches) in the last 32 bits with every bit inverted.
        [0x2001, 0, ..] => vec![
            v4(o[4], o[5], o[6], o[7]),
            v4(!o[12], !o[13], !o[14], !o[15]),
        ],
        _ => vec![],
    }
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
            let err = broad.check(sensitive).await.unwrap_err().to_string();
            assert!(err.contains("link-local or metadata"), "{sensitive}: {err}");
        }
        let explicit = list(&["169.254.169.254/32"]);
        assert!(explicit.check("http://169.254.169.254/").await.is_ok());

        let narrow = list(&["10.0.0.0/8", "localhost", "*.models.internal"]);
        assert!(narrow.check("http://10.9.9.9:8000").await.is_ok());
        assert!(narrow.check("http://localhost:8000").await.is_ok());
        let err = narrow
            .check("http://192.168.1.5:8000")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in replica_allow_list"), "{err}");
        let err = narrow
            .check("http://user:pw@10.0.0.1/")
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw"), "{err}");
        assert!(narrow.check("ftp://10.0.0.1/").await.is_err());
        assert!(narrow.check("not a url").await.is_err());
        assert!(AllowList::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(AllowList::parse(&["bad host!".into()]).is_err());
        assert!(list(&[]).is_empty());
    }

    /// Every spelling of the metadata address and of other link-local ones, through a list as
    /// wide as lists get: the URL parser turns exotic IPv4 into dotted addresses, and IPv6
    /// forms are checked by the IPv4 address they carry.
    #[tokio::test]
    async fn every_spelling_of_a_sensitive_address_is_refused() {
        let wide = list(&["0.0.0.0/0", "::/0"]);
        for url in [
            // IPv4 spellings the URL parser normalises.
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://0xa9fea9fe/",
            "http://0xA9.0xFE.0xA9.0xFE/",
            "http://169.254.43518/",
            "http://169.16689662/",
            "http://0251.254.169.254/",
            "http://169.254.169.254./",
            "http://%31%36%39.254.169.254/",
            "http://\u{FF11}\u{FF16}\u{FF19}.254.169.254/",
            "http://0x64.0x64.0x64.0xc8/",
            // IPv4-mapped, IPv4-compatible and IPv4-translated IPv6.
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::a9fe:a9fe]/",
            "http://[::169.254.169.254]:8080/",
            "http://[::ffff:0:a9fe:a9fe]/",
            // NAT64: well-known prefix, and the local-use prefix in each layout.
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[64:ff9b::6464:64c8]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[64:ff9b:1:a9fe:a9:fe00::]/",
            "http://[64:ff9b:1:a9:fe:a9fe::]/",
            "http://[64:ff9b:1:0:a9:fea9:fe00:0]/",
            // 6to4, and Teredo (client 169.254.169.254 inverted; or a link-local server).
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
            "http://[2001:0:a9fe:a9fe::1]/",
        ] {
            let err = wide.check(url).await.unwrap_err().to_string();
            assert!(err.contains("link-local or metadata"), "{url}: {err}");
        }
    }

    /// What the URL parser does with IPv4 spellings (the check relies on it): the host it
    /// hands over is the dotted address.
    #[test]
    fn the_url_parser_writes_ipv4_dotted() {
        for spelling in [
            "2852039166",
            "0251.0376.0251.0376",
            "0xa9fea9fe",
            "169.254.43518",
            "169.254.169.254.",
        ] {
            let url = reqwest::Url::parse(&format!("http://{spelling}/")).unwrap();
            assert_eq!(url.host_str(), Some("169.254.169.254"), "{spelling}");
        }
        let url = reqwest::Url::parse("http://[::ffff:169.254.169.254]/").unwrap();
        assert_eq!(url.host_str(), Some("[::ffff:a9fe:a9fe]"));
    }

    #[tokio::test]
    async fn ordinary_and_explicitly_allowed_addresses_stay_allowed() {
        let wide = list(&["0.0.0.0/0", "::/0"]);
        for url in [
            "http://[2606:4700:4700::1111]:8000/",
            "http://[fd12:3456::7]/",
            "http://[::1]:8000/",
            "http://[::ffff:10.1.2.3]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:c000:201::1]/",
            "http://167772161/",
        ] {
            assert!(wide.check(url).await.is_ok(), "{url}");
        }
        // An entry inside the sensitive range opens that range, in any spelling of it
        // (an IPv6 one still needs its IPv6 address allowed).
        let explicit = list(&["169.254.169.254/32", "::/0"]);
        for url in [
            "http://169.254.169.254/",
            "http://2852039166/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(explicit.check(url).await.is_ok(), "{url}");
        }
        let err = explicit
            .check("http://169.254.1.1/")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("link-local or metadata"), "{err}");
    }

    /// The IPv4 address inside an IPv6 one must be in the list too: `::/0` does not open
    /// IPv4 networks the list leaves out.
    #[tokio::test]
    async fn an_embedded_ipv4_address_is_checked_against_the_ipv4_entries() {
        let v6_only = list(&["::/0", "10.0.0.0/8"]);
        assert!(v6_only.check("http://[64:ff9b::a00:5]/").await.is_ok());
        for url in [
            "http://[64:ff9b::c0a8:105]/",
            "http://[::ffff:192.168.1.5]/",
            "http://[2002:c0a8:105::1]/",
        ] {
            let err = v6_only.check(url).await.unwrap_err().to_string();
            assert!(
                err.contains("which embeds 192.168.1.5) is not in replica_allow_list"),
                "{url}: {err}"
            );
        }
        // And the IPv6 address itself: an IPv4 entry does not open IPv6 space.
        let v4_only = list(&["0.0.0.0/0"]);
        assert!(v4_only.check("http://[64:ff9b::a00:5]/").await.is_err());
    }

    /// At connect time: no name may resolve to a sensitive address (in any form), and a name
    /// admitted by its addresses must keep resolving inside the list; names the API never
    /// admitted (the files' own endpoints) are held to the first rule only.
    #[tokio::test]
    async fn resolved_addresses_are_checked_at_connect_time() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let wide = list(&["0.0.0.0/0", "::/0"]);
        for address in [
            "169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::a9fe:a9fe",
            "fe80::1",
        ] {
            let err = wide
                .permits("models.test", ip(address))
                .unwrap_err()
                .to_string();
            assert!(err.contains("link-local or metadata"), "{address}: {err}");
        }
        assert!(wide.permits("models.test", ip("10.0.0.5")).is_ok());

        let narrow = list(&["127.0.0.0/8", "::1/128", "*.models.internal"]);
        assert!(narrow.permits("localhost", ip("10.0.0.5")).is_ok());
        narrow.check("http://localhost:8000/").await.unwrap();
        assert!(narrow.permits("localhost", ip("127.0.0.1")).is_ok());
        let err = narrow
            .permits("LocalHost", ip("10.0.0.5"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in replica_allow_list"), "{err}");
        // Admitted by name: its addresses are free, but never sensitive.
        assert!(narrow.permits("a.models.internal", ip("10.0.0.5")).is_ok());
        assert!(
            narrow
                .permits("a.models.internal", ip("169.254.169.254"))
                .is_err()
        );
    }

    /// The client built by the transport consults a list while the gateway holding it lives.
    #[tokio::test]
    async fn an_enforced_list_reaches_the_resolver() {
        use crate::http_client::guarded_resolver::GuardedResolver;
        let fake: guarded_resolver::Lookup = Arc::new(|_: &str| {
            Box::pin(async { Ok(vec!["64:ff9b::a9fe:a9fe".parse::<IpAddr>().unwrap()]) })
        });
        let resolver = GuardedResolver::enforced().with_lookup(fake);
        let _enforced = list(&["0.0.0.0/0", "::/0"]).enforced_at_connect();
        // Nothing connects here: only the resolver runs.
        let err = resolver.resolve_checked("rebound.test").await.unwrap_err();
        assert!(err.to_string().contains("link-local or metadata"), "{err}");
    }
}
