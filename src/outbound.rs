//! Outbound HTTP to URLs that arrive through the API (webhook endpoints):
//! the one client that holds the rules for going there.
//!
//! - https only; http, and private, loopback, link-local or otherwise
//!   non-public addresses, only when the operator allows them
//!   (`--webhook-allow-private`).
//! - The address rule is checked when the URL is accepted and again on
//!   every request, after DNS resolution and by the resolver the
//!   connection itself uses, so a name that later resolves to a private
//!   address (DNS rebinding) is refused too.
//! - No redirects, no proxies from the environment, a total timeout, and
//!   at most [`MAX_BODY`] bytes of an answer read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Most bytes of an answer's body that are read; the rest is dropped.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL is not a place we go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlRefused(pub String);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The address rule refused the target; sending again will not help
    /// until the endpoint or the rule changes.
    #[error("refused: {0}")]
    Refused(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, TLS failure, ...: the receiver may or may
    /// not have seen the request.
    #[error("{0}")]
    Transport(String),
}

/// Request headers: names are the caller's constants.
pub type Headers = Vec<(&'static str, String)>;

/// An HTTP answer, its body cut at [`MAX_BODY`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After`, as a delay from now (seconds or an HTTP date).
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// An HTTP client's settings every outbound call shares: the system's
/// root certificates, a total timeout, no redirects followed, no proxies
/// from the environment.
pub fn client_builder(timeout: Duration) -> Result<reqwest::ClientBuilder, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("tenantd/", env!("CARGO_PKG_VERSION"))))
}

/// Checks `url` against the rules, without resolving names (that happens
/// when connecting). Messages are fit for a field violation.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, UrlRefused> {
    let refuse = |why: &str| Err(UrlRefused(why.to_owned()));
    if url.len() > MAX_URL_LEN {
        return refuse("must be at most 2048 characters");
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return refuse("must be an absolute http(s) URL");
    };
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return refuse("must use https (http needs --webhook-allow-private)"),
        _ => return refuse("must be an absolute http(s) URL"),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse("must not carry credentials; the payload is signed instead");
    }
    if parsed.fragment().is_some() {
        return refuse("must not have a fragment");
    }
    match parsed.host() {
        None => refuse("must name a host"),
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private).map(|()| parsed),
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private).map(|()| parsed),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            if !allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                return refuse(
                    "points to a loopback name (allowed only with --webhook-allow-private)",
                );
            }
            Ok(parsed)
        }
    }
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), UrlRefused> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(UrlRefused(format!(
            "points to the non-public address {ip} (allowed only with --webhook-allow-private)"
        )))
    }
}

/// Whether `ip` is a public unicast address: not loopback, private,
/// link-local, shared (CGNAT), multicast, documentation, benchmarking,
/// reserved or unspecified, including IPv4 addresses embedded in IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its low bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || ip.is_multicast()
        || a >= 240) // reserved and broadcast
}

/// Resolves names with the system resolver and refuses the whole name if
/// any of its addresses is not public (unless allowed).
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(format!(
                    "{host} resolves to the non-public address {} (allowed only with --webhook-allow-private)",
                    bad.ip()
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The client for operator-supplied URLs.
#[derive(Clone)]
pub struct Outbound {
    http: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl Outbound {
    /// A client whose requests give up after `timeout`; private targets
    /// only if `allow_private`.
    pub fn new(allow_private: bool, timeout: Duration) -> Result<Self, String> {
        let http = client_builder(timeout)?
            .dns_resolver(GuardedResolver { allow_private })
            .build()
            .map_err(|e| format!("HTTP client set-up: {e}"))?;
        Ok(Outbound {
            http,
            allow_private,
            timeout,
        })
    }

    /// POSTs `body` as JSON with `headers`; a redirect is an answer like any
    /// other (3xx), never followed.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &Headers,
        body: Vec<u8>,
    ) -> Result<Answer, SendError> {
        let url = check_url(url, self.allow_private).map_err(|e| SendError::Refused(e.0))?;
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await.map_err(|e| self.send_error(e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                // The status is what counts; a body cut short is kept as read.
                Err(_) => break,
            }
        }
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    fn send_error(&self, e: reqwest::Error) -> SendError {
        if e.is_timeout() {
            return SendError::Timeout(self.timeout);
        }
        // The resolver's refusal is the innermost source; say it plainly.
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        let mut innermost = e.to_string();
        while let Some(s) = source {
            innermost = s.to_string();
            source = s.source();
        }
        if innermost.contains("non-public address") {
            return SendError::Refused(innermost);
        }
        SendError::Transport(if e.is_connect() {
            format!("cannot connect: {innermost}")
        } else {
            innermost
        })
    }
}

/// `Retry-After` as seconds or an HTTP date, as a delay from now.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn urls_follow_the_rules() {
        let ok = |u: &str, private| check_url(u, private).is_ok();
        assert!(ok("https://hooks.example.com/tenantd", false));
        assert!(!ok("http://hooks.example.com/", false));
        assert!(ok("http://127.0.0.1:8080/hook", true));
        assert!(!ok("https://127.0.0.1/", false));
        assert!(!ok("https://[::1]/", false));
        assert!(!ok("https://169.254.169.254/latest/meta-data", false));
        assert!(!ok("https://localhost/", false));
        assert!(!ok("https://user:pw@hooks.example.com/", false));
        assert!(!ok("ftp://hooks.example.com/", true));
        assert!(!ok("hooks.example.com/path", true));
        assert!(!ok("https://hooks.example.com/#x", false));
        assert!(!ok(
            &format!("https://h.example.com/{}", "a".repeat(3000)),
            false
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        let parsed = parse_retry_after(&later).unwrap();
        assert!(parsed > Duration::from_secs(3500) && parsed <= Duration::from_secs(3600));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn private_targets_are_refused_when_sending_too() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let strict = Outbound::new(false, Duration::from_secs(5)).unwrap();
        let refused = strict
            .post_json(
                &format!("https://127.0.0.1:{port}/"),
                &Vec::new(),
                b"{}".to_vec(),
            )
            .await;
        assert!(matches!(refused, Err(SendError::Refused(_))), "{refused:?}");
        // A name passes the URL check; the resolver the connection uses
        // refuses it once it resolves to loopback.
        let resolved = GuardedResolver {
            allow_private: false,
        }
        .resolve("localhost".parse().unwrap())
        .await;
        let error = resolved.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("non-public address"), "{error}");
        let allowed = GuardedResolver {
            allow_private: true,
        }
        .resolve("localhost".parse().unwrap())
        .await
        .unwrap()
        .count();
        assert!(allowed > 0);
    }
}
