//! Which requests may reach worker sockets and the admin API: they must
//! name this gateway in `Host` — a loopback name, the listen address, or
//! `public_url`'s host (DNS-rebinding protection) — and must not come from
//! a browser page (cross-site WebSocket hijacking).

use http::{HeaderMap, StatusCode, header};

use crate::config::{Config, public_host};

/// Whether `host` names this gateway as configured.
pub fn is_own_host(host: &str, config: &Config) -> bool {
    is_loopback_host(host)
        || config
            .server
            .public_url
            .as_deref()
            .is_some_and(|url| public_host(url).eq_ignore_ascii_case(host))
        || (!config.server.listen.ip().is_unspecified() && host == config.server.listen.to_string())
}

/// Whether a `Host` header value names this machine: `localhost`,
/// `127.0.0.1` or `[::1]`, with any port — the names rmcp allows by default.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// Checks the `Origin` of a request to `/mcp`: none (a program, not a web
/// page), this gateway's own origin (the page's host is the `Host` the
/// request was sent to, and that names this gateway), or one of
/// `allowed_origins`. MCP requires servers to validate it: a page on another
/// site must not reach tools through the user's browser. A DNS-rebinding
/// page has its own name in both headers, which is not this gateway's.
pub fn admit_mcp_origin(headers: &HeaderMap, config: &Config) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("<not text>");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let same_origin = origin.split_once("://").is_some_and(|(scheme, authority)| {
        matches!(scheme, "http" | "https")
            && authority.trim_end_matches('/').eq_ignore_ascii_case(host)
    }) && is_own_host(host, config);
    let allowed = same_origin
        || config
            .server
            .allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin.trim_end_matches('/')));
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "requests from the web origin {origin} are refused; add it to allowed_origins in capgate.toml if its pages may use this gateway"
        ))
    }
}

/// Checks a request from a local program: a worker socket or the admin
/// API. Worker SDKs (iii's for Node, Python and Rust; capgate's) and the CLI
/// send no `Origin`; browsers send one on cross-site and state-changing
/// requests, so a page the developer happens to have open cannot register,
/// call or administer functions.
pub fn admit_local_client(
    headers: &HeaderMap,
    config: &Config,
) -> Result<(), (StatusCode, String)> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "requests from web pages are refused (Origin: {}); workers and the CLI connect without an Origin header\n",
                origin.to_str().unwrap_or("<not text>")
            ),
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !is_own_host(host, config) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "Host '{host}' does not name this gateway; connect to localhost, 127.0.0.1 or [::1], \
                 or set public_url to the address clients use\n"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "localhost:1", "127.0.0.1:49134", "[::1]:49134"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["127.0.0.2", "localhost.evil", "[::2]:1", "", "evil.example"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn mcp_admits_its_own_origin_and_no_other() {
        let config = Config::default();
        let headers = |host: &'static str, origin: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(host));
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
            headers
        };
        for (host, origin) in [
            ("127.0.0.1:49134", "http://127.0.0.1:49134"),
            ("localhost:49134", "http://localhost:49134/"),
        ] {
            assert!(
                admit_mcp_origin(&headers(host, origin), &config).is_ok(),
                "{origin}"
            );
        }
        for (host, origin) in [
            // DNS rebinding: the attacker's name in both headers.
            ("evil.example:49134", "http://evil.example:49134"),
            ("127.0.0.1:49134", "http://evil.example"),
            ("127.0.0.1:49134", "http://127.0.0.1:3000"),
            ("127.0.0.1:49134", "file://127.0.0.1:49134"),
            ("127.0.0.1:49134", "null"),
        ] {
            assert!(
                admit_mcp_origin(&headers(host, origin), &config).is_err(),
                "{host} {origin}"
            );
        }
    }

    #[test]
    fn the_public_url_host_is_this_gateway() {
        let mut config = Config::default();
        config.server.public_url = Some("https://capgate.example.com".into());
        assert!(is_own_host("capgate.example.com", &config));
        assert!(!is_own_host("evil.example", &config));
    }

    #[test]
    fn browsers_and_foreign_hosts_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:49134"));
        assert!(admit_local_client(&headers, &Config::default()).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let (status, message) = admit_local_client(&headers, &Config::default()).unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(message.contains("evil.example"), "{message}");
        headers.remove(header::ORIGIN);
        headers.insert(
            header::HOST,
            HeaderValue::from_static("rebound.example:49134"),
        );
        assert!(
            admit_local_client(&headers, &Config::default())
                .unwrap_err()
                .1
                .contains("does not name this gateway")
        );
    }
}
