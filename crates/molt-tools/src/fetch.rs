//! `web_fetch`: an HTTP(S) GET with time and size caps, returning readable text, that
//! does not reach loopback, private or link-local addresses unless allowed.
//!
//! Checking the URL's host name is not enough: a public name can resolve to `127.0.0.1`,
//! and a public server can redirect to `http://169.254.169.254/`. So the address the
//! connection actually uses is checked, at every place it can come from:
//!
//! - names go through [`GuardedResolver`], which drops every disallowed address from the
//!   DNS answer before the connector sees it (a name with only disallowed addresses
//!   fails; one with mixed answers connects only to the allowed ones);
//! - IP-literal hosts (`http://127.0.0.1/`, `http://[::ffff:10.0.0.1]/`,
//!   `http://2130706433/`, which the URL parser normalises to an address) never reach a
//!   resolver, so they are checked before the request and on every redirect, by a custom
//!   redirect policy that also caps redirects;
//! - and after connecting, the response's peer address is checked once more, so nothing
//!   the checks above missed is returned.
//!
//! Proxies are never used (a proxy would make the connected address meaningless). Only
//! `http` and `https` are fetched. The body is read as a stream and reading stops at the
//! byte cap. HTML (by content type, or sniffed when there is none) becomes text through
//! [`crate::html`]; other text types pass through; binary content is refused with a
//! message saying what it was.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

/// Limits and permissions of `web_fetch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Allow loopback, private, link-local and other non-public addresses
    /// (`tools.web_fetch.allow_private`).
    pub allow_private: bool,
    /// The whole fetch — connect, redirects, body — must finish within this.
    pub timeout: Duration,
    /// Body bytes read at most; the rest is not read.
    pub max_bytes: usize,
    /// Characters of text returned at most.
    pub max_chars: usize,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchPolicy {
    /// 30 s, 2 MiB of body, 50 000 characters, 5 redirects, public addresses only.
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(30),
            max_bytes: 2 * 1024 * 1024,
            max_chars: 50_000,
            max_redirects: 5,
            user_agent: concat!("molt/", env!("CARGO_PKG_VERSION"), " (web_fetch)").to_owned(),
        }
    }
}

/// How HTML is turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extract {
    /// Plain text: structure as line breaks, link text without targets.
    Text,
    /// Markdown-ish: `#` headings, `-`/`1.` lists, fenced `pre`, `[text](url)` links.
    Markdown,
}

/// A fetched page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The final URL, after redirects.
    pub url: String,
    /// The HTTP status (non-2xx statuses are returned too, with their body).
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The readable text.
    pub text: String,
    /// The body was longer than the byte cap or the text longer than the character cap.
    pub truncated: bool,
    /// The address the connection used.
    pub remote_addr: Option<SocketAddr>,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// Not a valid `http`/`https` URL.
    InvalidUrl,
    /// The URL, a redirect or the connection leads to a disallowed address.
    Blocked,
    /// The fetch did not finish in time.
    Timeout,
    /// More redirects than allowed.
    TooManyRedirects,
    /// The content is not text.
    Binary,
    /// Connecting, TLS, or reading failed.
    Network,
    /// The HTTP client could not be set up.
    Setup,
}

/// A `web_fetch` failure, with a message for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// What went wrong.
    pub kind: FetchErrorKind,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for FetchError {}

impl FetchError {
    fn new(kind: FetchErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Carried through reqwest's error chain from the resolver and the redirect policy, so
/// the caller learns the fetch was blocked rather than that it failed.
#[derive(Debug)]
struct Blocked(String);

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Blocked {}

#[derive(Debug)]
struct TooManyRedirects(usize);

impl fmt::Display for TooManyRedirects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {} redirects", self.0)
    }
}

impl StdError for TooManyRedirects {}

/// Whether `ip` is a public unicast address that `web_fetch` may connect to by default.
///
/// Refused: unspecified, "this network" (0/8), loopback, RFC 1918 private, CGNAT
/// (100.64/10), link-local (169.254/16, fe80::/10), IETF protocol assignments
/// (192.0.0/24, 2001::/23), documentation (192.0.2/24, 198.51.100/24, 203.0.113/24,
/// 2001:db8::/32, 3fff::/20), benchmarking (198.18/15, 2001:2::/48), 6to4 relay anycast
/// (192.88.99/24), multicast, reserved (240/4) and broadcast, unique local (fc00::/7),
/// site-local (fec0::/10), discard (100::/64), and IPv6 forms that embed an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) when the embedded
/// address is refused; local-use NAT64 (64:ff9b:1::/48) is refused outright.
pub fn ip_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => ipv4_allowed(v4),
        IpAddr::V6(v6) => ipv6_allowed(v6),
    }
}

fn ipv4_allowed(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn ipv6_allowed(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return ipv4_allowed(v4);
    }
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4-compatible ::a.b.c.d (deprecated), including :: and ::1.
    if s[..6] == [0; 6] {
        return ipv4_allowed(embedded(s[6], s[7])) && !ip.is_loopback() && !ip.is_unspecified();
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return ipv4_allowed(embedded(s[6], s[7]));
    }
    // 6to4 2002:aabb:ccdd::/48.
    if s[0] == 0x2002 {
        return ipv4_allowed(embedded(s[1], s[2]));
    }
    !((s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments, Teredo, benchmarking
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || (s[0] & 0xff00) == 0xff00) // multicast
}

/// Checks a URL before it is requested or followed: `http`/`https` only, a host, and,
/// for an IP-literal host, an allowed address (names are checked by the resolver).
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs can be fetched, not {}:",
            url.scheme()
        ));
    }
    let ip = match url.host() {
        None => return Err("the URL has no host".to_owned()),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    if allow_private || ip_allowed(ip) {
        Ok(())
    } else {
        Err(blocked_message(&ip.to_string()))
    }
}

fn blocked_message(what: &str) -> String {
    format!(
        "{what} is a loopback, private, link-local or otherwise non-public address; web_fetch only reaches public addresses (an operator can set tools.web_fetch.allow_private = true)"
    )
}

/// A DNS resolver that drops disallowed addresses from every answer.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    /// A resolver that, unless `allow_private`, keeps only [`ip_allowed`] addresses.
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// Resolves `host` with the system resolver and filters the addresses.
    pub async fn lookup(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        if found.is_empty() {
            return Err(format!("{host} has no addresses").into());
        }
        let kept: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.allow_private || ip_allowed(a.ip()))
            .collect();
        if kept.is_empty() {
            let addrs: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
            return Err(Box::new(Blocked(blocked_message(&format!(
                "{host} resolves to {}, which",
                addrs.join(", ")
            )))));
        }
        Ok(kept)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let kept = this.lookup(&host).await?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client set up for one policy; build once and reuse.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: FetchPolicy,
}

impl Fetcher {
    /// Builds the client: no proxies, the guarded resolver, the checking redirect policy.
    pub fn new(policy: FetchPolicy) -> Result<Self, FetchError> {
        let resolver = GuardedResolver::new(policy.allow_private);
        Self::with_resolver(policy, resolver)
    }

    /// [`Fetcher::new`] with a given resolver (tests use a permissive one to check that
    /// the connected address is checked on its own).
    fn with_resolver(policy: FetchPolicy, resolver: GuardedResolver) -> Result<Self, FetchError> {
        // One TLS provider per process; a second install fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let allow = policy.allow_private;
        let max = policy.max_redirects;
        let redirects = redirect::Policy::custom(move |attempt| {
            // `previous` holds the first URL and every redirect so far.
            if attempt.previous().len() > max {
                return attempt.error(TooManyRedirects(max));
            }
            match check_url(attempt.url(), allow) {
                Ok(()) => attempt.follow(),
                Err(why) => {
                    let why = format!("redirect to {}: {why}", attempt.url());
                    attempt.error(Blocked(why))
                }
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirects)
            .dns_resolver(Arc::new(resolver))
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            .user_agent(policy.user_agent.clone())
            .build()
            .map_err(|e| {
                FetchError::new(
                    FetchErrorKind::Setup,
                    format!("cannot set up the HTTP client: {}", chain(&e)),
                )
            })?;
        Ok(Self { client, policy })
    }

    /// The policy this fetcher enforces.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// GETs `url` and returns its readable text.
    pub async fn fetch(&self, url: &str, extract: Extract) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.policy.timeout, self.fetch_inner(url, extract)).await {
            Ok(r) => r,
            Err(_) => Err(timeout_error(self.policy.timeout)),
        }
    }

    async fn fetch_inner(&self, url: &str, extract: Extract) -> Result<Fetched, FetchError> {
        let allow = self.policy.allow_private;
        let parsed = Url::parse(url.trim()).map_err(|e| {
            FetchError::new(
                FetchErrorKind::InvalidUrl,
                format!("{url:?} is not a valid URL: {e}"),
            )
        })?;
        check_url(&parsed, allow).map_err(|why| {
            let kind = if matches!(parsed.scheme(), "http" | "https") {
                FetchErrorKind::Blocked
            } else {
                FetchErrorKind::InvalidUrl
            };
            FetchError::new(kind, why)
        })?;
        let mut response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| self.request_error(&e))?;
        let remote_addr = response.remote_addr();
        if !allow {
            match remote_addr {
                Some(a) if ip_allowed(a.ip()) => {}
                Some(a) => {
                    return Err(FetchError::new(
                        FetchErrorKind::Blocked,
                        blocked_message(&format!("the connection went to {}, which", a.ip())),
                    ));
                }
                None => {
                    return Err(FetchError::new(
                        FetchErrorKind::Blocked,
                        "the address of the connection could not be checked, so the response is not returned",
                    ));
                }
            }
        }
        let final_url = response.url().to_string();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        let mut body: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(&e))? {
            let room = self.policy.max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }

        let kind = classify(content_type.as_deref(), &body);
        let decoded = decode(content_type.as_deref(), &body);
        let mut text = match kind {
            BodyKind::Html => {
                let base = Url::parse(&final_url).ok();
                crate::html::to_text(&decoded, extract == Extract::Markdown, base.as_ref())
            }
            BodyKind::Text => decoded,
            BodyKind::Binary => {
                return Err(FetchError::new(
                    FetchErrorKind::Binary,
                    format!(
                        "{final_url} returned {} ({}{} bytes), which is not text; web_fetch returns text only",
                        content_type.as_deref().unwrap_or("no content type"),
                        body.len(),
                        if truncated { "+" } else { "" }
                    ),
                ));
            }
        };
        if let Some((cut, _)) = text.char_indices().nth(self.policy.max_chars) {
            text.truncate(cut);
            truncated = true;
        }
        Ok(Fetched {
            url: final_url,
            status,
            content_type,
            text,
            truncated,
            remote_addr,
        })
    }

    fn request_error(&self, e: &reqwest::Error) -> FetchError {
        let mut source: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(b) = s.downcast_ref::<Blocked>() {
                return FetchError::new(FetchErrorKind::Blocked, b.0.clone());
            }
            if let Some(t) = s.downcast_ref::<TooManyRedirects>() {
                return FetchError::new(
                    FetchErrorKind::TooManyRedirects,
                    format!("the page redirects {t}; fetch the final URL directly"),
                );
            }
            source = s.source();
        }
        if e.is_timeout() {
            return timeout_error(self.policy.timeout);
        }
        FetchError::new(
            FetchErrorKind::Network,
            format!("fetch failed: {}", chain(e)),
        )
    }
}

fn timeout_error(limit: Duration) -> FetchError {
    FetchError::new(
        FetchErrorKind::Timeout,
        format!("the fetch did not finish within {} s", limit.as_secs_f64()),
    )
}

/// GETs `url` under `policy` with a client built for this call. Callers that fetch more
/// than once keep a [`Fetcher`].
pub async fn fetch(
    url: &str,
    policy: &FetchPolicy,
    extract: Extract,
) -> Result<Fetched, FetchError> {
    Fetcher::new(policy.clone())?.fetch(url, extract).await
}

/// An error and its sources, joined with ": ".
fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        source = inner.source();
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Html,
    Text,
    Binary,
}

/// What the body is, by content type, or by sniffing when there is none (or it is the
/// catch-all `application/octet-stream`).
fn classify(content_type: Option<&str>, body: &[u8]) -> BodyKind {
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match mime.as_str() {
        "text/html" | "application/xhtml+xml" => BodyKind::Html,
        "" | "application/octet-stream" | "unknown/unknown" => sniff(body),
        m if m.starts_with("text/")
            || m.ends_with("+json")
            || m.ends_with("+xml")
            || matches!(
                m,
                "application/json"
                    | "application/xml"
                    | "application/javascript"
                    | "application/ecmascript"
                    | "application/x-javascript"
                    | "application/yaml"
                    | "application/x-yaml"
                    | "application/toml"
                    | "application/x-sh"
                    | "application/sql"
                    | "application/graphql"
                    | "application/x-ndjson"
                    | "application/ld+json"
            ) =>
        {
            BodyKind::Text
        }
        _ => BodyKind::Binary,
    }
}

fn sniff(body: &[u8]) -> BodyKind {
    let head = &body[..body.len().min(1024)];
    if head.contains(&0) {
        return BodyKind::Binary;
    }
    let start = String::from_utf8_lossy(head);
    let start = start
        .trim_start_matches('\u{feff}')
        .trim_start()
        .to_ascii_lowercase();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        return BodyKind::Html;
    }
    match std::str::from_utf8(head) {
        Ok(_) => BodyKind::Text,
        // An incomplete character at the end of the sniffed window is fine.
        Err(e) if e.error_len().is_none() => BodyKind::Text,
        Err(_) => BodyKind::Binary,
    }
}

/// The body as text: ISO-8859-1 family charsets byte for byte, everything else as UTF-8
/// with invalid sequences replaced.
fn decode(content_type: Option<&str>, body: &[u8]) -> String {
    let charset = content_type
        .into_iter()
        .flat_map(|c| c.split(';').skip(1))
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase());
    match charset.as_deref() {
        Some("iso-8859-1" | "latin1" | "latin-1" | "windows-1252" | "cp1252" | "us-ascii") => {
            body.iter().map(|&b| char::from(b)).collect()
        }
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        match s.parse() {
            Ok(ip) => ip,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!ip_allowed(ip(s)), "{s} was allowed");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(ip_allowed(ip(s)), "{s} was refused");
        }
    }

    fn url(s: &str) -> Url {
        match Url::parse(s) {
            Ok(u) => u,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn redirect_and_request_targets_are_checked() {
        for s in [
            "http://127.0.0.1/",
            "http://[::1]:8080/x",
            "https://169.254.169.254/latest/meta-data/",
            "http://[::ffff:192.168.0.1]/",
            // The URL parser turns these into IPv4 addresses.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0/",
        ] {
            let e = check_url(&url(s), false).err();
            assert!(
                e.as_deref().is_some_and(|m| m.contains("non-public")),
                "{s}: {e:?}"
            );
            assert!(check_url(&url(s), true).is_ok(), "{s} with allow_private");
        }
        assert!(check_url(&url("https://example.com/a"), false).is_ok());
        assert!(check_url(&url("http://93.184.215.14/"), false).is_ok());
        for s in ["file:///etc/passwd", "ftp://example.com/", "gopher://x/"] {
            let e = check_url(&url(s), true).err();
            assert!(e.is_some_and(|m| m.contains("only http and https")), "{s}");
        }
    }

    #[tokio::test]
    async fn the_connected_address_is_checked_even_if_resolution_let_it_through() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            // Answer every connection (localhost may be tried on ::1 first, elsewhere).
            for stream in listener.incoming().take(4) {
                let Ok(mut s) = stream else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret",
                );
            }
        });
        let policy = FetchPolicy {
            timeout: Duration::from_secs(10),
            ..FetchPolicy::default()
        };
        // A resolver that lets loopback through, as a DNS trick might.
        let fetcher = Fetcher::with_resolver(policy, GuardedResolver::new(true)).expect("fetcher");
        let e = fetcher
            .fetch(&format!("http://localhost:{port}/"), Extract::Text)
            .await
            .err();
        assert!(
            e.as_ref().is_some_and(|e| e.kind == FetchErrorKind::Blocked
                && e.message.contains("the connection went to")),
            "{e:?}"
        );
    }

    #[test]
    fn content_is_classified() {
        assert_eq!(
            classify(Some("text/html; charset=utf-8"), b"x"),
            BodyKind::Html
        );
        assert_eq!(classify(Some("application/json"), b"{}"), BodyKind::Text);
        assert_eq!(
            classify(Some("application/vnd.api+json"), b"{}"),
            BodyKind::Text
        );
        assert_eq!(classify(Some("text/plain"), b"<html>"), BodyKind::Text);
        assert_eq!(classify(Some("image/png"), b"\x89PNG"), BodyKind::Binary);
        assert_eq!(classify(Some("application/pdf"), b"%PDF"), BodyKind::Binary);
        assert_eq!(classify(None, b"  <!DOCTYPE html><p>x"), BodyKind::Html);
        assert_eq!(classify(None, b"plain words"), BodyKind::Text);
        assert_eq!(
            classify(Some("application/octet-stream"), b"a\0b"),
            BodyKind::Binary
        );
        assert_eq!(classify(None, b"\xff\xfe\xfd"), BodyKind::Binary);
    }

    #[test]
    fn charsets_are_decoded() {
        assert_eq!(
            decode(Some("text/plain; charset=ISO-8859-1"), b"caf\xe9"),
            "café"
        );
        assert_eq!(
            decode(Some("text/plain; charset=\"utf-8\""), "café".as_bytes()),
            "café"
        );
        assert_eq!(decode(None, b"caf\xe9"), "caf\u{fffd}");
    }
}
