//! Who may reach a loopback-only gateway: requests must name a loopback host
//! (DNS-rebinding protection), and worker sockets must not come from a
//! browser page (cross-site WebSocket hijacking).

use http::{HeaderMap, StatusCode, header};

/// Whether a `Host` header value names this machine: `localhost`,
/// `127.0.0.1` or `[::1]`, with any port — the names rmcp allows by default.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// Checks a request from a local program: a worker socket or the admin
/// API. Worker SDKs (iii's for Node, Python and Rust; capgate's) and the CLI
/// send no `Origin`; browsers send one on cross-site and state-changing
/// requests, so a page the developer happens to have open cannot register,
/// call or administer functions.
pub fn admit_local_client(headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
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
    if !is_loopback_host(host) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "Host '{host}' is not a loopback name; connect to localhost, 127.0.0.1 or [::1]\n"
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
    fn browsers_and_foreign_hosts_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:49134"));
        assert!(admit_local_client(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let (status, message) = admit_local_client(&headers).unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(message.contains("evil.example"), "{message}");
        headers.remove(header::ORIGIN);
        headers.insert(
            header::HOST,
            HeaderValue::from_static("rebound.example:49134"),
        );
        assert!(
            admit_local_client(&headers)
                .unwrap_err()
                .1
                .contains("not a loopback name")
        );
    }
}
