//! Which addresses an upstream may be reached at (SSRF defence).
//!
//! The check is on the address a connection is about to be made to: a host
//! name is resolved here (the HTTP client asks this resolver, never the
//! system's directly) and only allowed addresses are returned, so a name
//! that resolves differently later (DNS rebinding) is checked again at that
//! connect. URLs that name an IP address never reach a resolver and are
//! checked by [`AddressRules::check_url`] before the request is sent.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused unless allow-listed.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4).map(|_| "an IPv4-mapped IPv6 address of a refused range");
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 = Ipv4Addr::from(u32::from(segments[6]) << 16 | u32::from(segments[7]));
                return refused_v4(v4).map(|_| "a NAT64 address of a refused range");
            }
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                return Some("a cloud metadata address");
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if segments[0] == 0x2002 {
                // 6to4 embeds an IPv4 address: refused when that one is.
                let v4 = Ipv4Addr::from(u32::from(segments[1]) << 16 | u32::from(segments[2]));
                refused_v4(v4).map(|_| "a 6to4 address of a refused range")
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("a cloud metadata address")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT (RFC 6598)")
    } else if a == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved (240.0.0.0/4)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments (192.0.0.0/24)")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking (198.18.0.0/15)")
    } else {
        None
    }
}

/// A refused destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{host} resolves to {address}, which is {range}; capgate refuses it for REST upstreams unless the service allow-lists it (allow = [\"{address}/32\"] or a wider range)"
    )]
    Refused {
        host: String,
        address: IpAddr,
        range: &'static str,
    },
    #[error("{host} could not be resolved: {reason}")]
    Unresolved { host: String, reason: String },
    #[error("'{url}' is not an http or https URL")]
    Scheme { url: String },
    #[error("'{url}' is not a valid URL: {reason}")]
    Url { url: String, reason: String },
}

/// The address rules of one service.
#[derive(Debug, Clone, Default)]
pub struct AddressRules {
    /// Ranges allowed although refused by default.
    pub allow: Vec<IpNet>,
    /// Loopback upstreams (the gateway itself listens only on loopback).
    pub allow_loopback: bool,
}

impl AddressRules {
    /// Why `ip` is refused, if it is.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let range = refused_range(ip)?;
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return None;
        }
        if self.allow_loopback && canonical.is_loopback() {
            return None;
        }
        Some(range)
    }

    /// Checks a URL's scheme, and its host when it is an IP address (the
    /// resolver never sees those). Decimal, octal and hexadecimal IPv4
    /// spellings are read as the addresses they are by the URL parser.
    pub fn check_url(&self, url: &url::Url) -> Result<(), GuardError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::Scheme {
                url: url.to_string(),
            });
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => {
                return Err(GuardError::Url {
                    url: url.to_string(),
                    reason: "it has no host".into(),
                });
            }
        };
        match self.refusal(ip) {
            Some(range) => Err(GuardError::Refused {
                host: url.host_str().unwrap_or_default().to_owned(),
                address: ip,
                range,
            }),
            None => Ok(()),
        }
    }
}

/// Static host → address entries checked before DNS (like `curl --resolve`):
/// names pinned by the operator, also subject to the rules.
pub type Hosts = HashMap<String, Vec<IpAddr>>;

/// The HTTP client's resolver: the system's (or the static table's)
/// addresses, less the refused ones.
pub struct GuardedResolver {
    pub rules: AddressRules,
    pub hosts: Arc<Hosts>,
}

impl GuardedResolver {
    /// The allowed addresses of `host`, or why there is none.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<IpAddr>, GuardError> {
        let addresses: Vec<IpAddr> = match self.hosts.get(&host.to_ascii_lowercase()) {
            Some(pinned) => pinned.clone(),
            None => tokio::net::lookup_host((host, 0))
                .await
                .map_err(|error| GuardError::Unresolved {
                    host: host.to_owned(),
                    reason: error.to_string(),
                })?
                .map(|addr| addr.ip())
                .collect(),
        };
        let mut first_refusal = None;
        let allowed: Vec<IpAddr> = addresses
            .into_iter()
            .filter(|ip| match self.rules.refusal(*ip) {
                Some(range) => {
                    first_refusal.get_or_insert((*ip, range));
                    false
                }
                None => true,
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some((address, range))) => Err(GuardError::Refused {
                host: host.to_owned(),
                address,
                range,
            }),
            (true, None) => Err(GuardError::Unresolved {
                host: host.to_owned(),
                reason: "no address".into(),
            }),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.rules.clone();
        let hosts = self.hosts.clone();
        Box::pin(async move {
            let resolver = GuardedResolver { rules, hosts };
            let allowed = resolver.resolve_host(name.as_str()).await?;
            let addrs: Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The [`GuardError`] inside an HTTP client's error, if that is what it was.
pub fn guard_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a GuardError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(guard) = error.downcast_ref::<GuardError>() {
            return Some(guard);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_public_ones_pass() {
        let refused = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
            "100.100.100.200",
        ];
        for text in refused {
            let ip: IpAddr = text.parse().unwrap();
            assert!(refused_range(ip).is_some(), "{text} should be refused");
        }
        for text in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "8.8.8.8",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(refused_range(ip), None, "{text} should pass");
        }
    }

    #[test]
    fn ip_spellings_in_urls_are_read_as_the_addresses_they_are() {
        let rules = AddressRules::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://0xa9fea9fe/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://127.1/",
            "http://[fd00:ec2::254]/",
        ] {
            let parsed = url::Url::parse(url).unwrap();
            let error = rules.check_url(&parsed).unwrap_err();
            assert!(
                matches!(error, GuardError::Refused { .. }),
                "{url}: {error}"
            );
            assert!(error.to_string().contains("refuses"), "{error}");
        }
        let error = rules
            .check_url(&url::Url::parse("file:///etc/passwd").unwrap())
            .unwrap_err();
        assert!(matches!(error, GuardError::Scheme { .. }));
        assert!(
            rules
                .check_url(&url::Url::parse("https://example.com/").unwrap())
                .is_ok()
        );
    }

    #[test]
    fn allow_lists_and_loopback_open_exactly_their_ranges() {
        let rules = AddressRules {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            allow_loopback: true,
        };
        assert_eq!(rules.refusal("10.9.9.9".parse().unwrap()), None);
        assert_eq!(rules.refusal("::ffff:10.9.9.9".parse().unwrap()), None);
        assert_eq!(rules.refusal("127.0.0.1".parse().unwrap()), None);
        assert!(rules.refusal("192.168.0.1".parse().unwrap()).is_some());
        assert!(rules.refusal("169.254.169.254".parse().unwrap()).is_some());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_range_is_refused_at_resolution() {
        let hosts: Hosts = [
            (
                "internal.test".to_owned(),
                vec!["10.0.0.7".parse().unwrap()],
            ),
            (
                "mixed.test".to_owned(),
                vec![
                    "10.0.0.7".parse().unwrap(),
                    "93.184.215.14".parse().unwrap(),
                ],
            ),
        ]
        .into();
        let resolver = GuardedResolver {
            rules: AddressRules::default(),
            hosts: Arc::new(hosts),
        };
        let error = resolver.resolve_host("internal.test").await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("internal.test resolves to 10.0.0.7, which is private"),
            "{error}"
        );
        // Only the allowed addresses of a mixed answer are ever connected to.
        let allowed = resolver.resolve_host("mixed.test").await.unwrap();
        assert_eq!(allowed, ["93.184.215.14".parse::<IpAddr>().unwrap()]);
    }
}
