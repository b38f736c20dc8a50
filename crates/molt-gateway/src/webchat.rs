//! The web chat page: static HTML, CSS and JavaScript compiled into the binary
//! (`crates/molt-gateway/webchat/`), served at `<base>` and `<base>chat` when
//! `gateway.control_ui` enables it. The page is one more protocol client: it opens the
//! gateway's WebSocket like the CLI does, with the token or password the person types.
//! Which of the two it asks for is written into the page (`<meta name="molt-auth">`); the
//! handshake's error codes would tell it too, but only after a failed attempt that counts
//! against the address's rate limit.
//!
//! Every response carries a strict Content-Security-Policy: scripts, styles and images from
//! this origin only (no inline script or style), connections to this origin only (`'self'`
//! covers `ws:`/`wss:` on the same host), and no framing.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use molt_config::{AuthSource, Config};

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its name under the base path, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../webchat/index.html");

/// The tag in `index.html` that tells the page which secret to ask for; the file carries the
/// default, `token`.
const AUTH_META: &str = r#"<meta name="molt-auth" content="token">"#;

/// Everything the page loads besides itself.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../webchat/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../webchat/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../webchat/icon.svg"),
    },
];

/// The resolved `[gateway.control_ui]`: whether the page is served, where, and which other
/// origins may open a WebSocket.
#[derive(Debug, Clone)]
pub struct WebChat {
    enabled: bool,
    /// With one trailing slash: `/` or `/molt/`.
    base: String,
    /// Lower case, no trailing slash.
    allowed_origins: Vec<String>,
    /// `index.html` with the gateway's auth kind written in.
    index: Bytes,
}

/// The page as served under `auth`: the kind of secret (never the secret) in its meta tag.
fn index_for(auth: AuthSource<'_>) -> Bytes {
    let kind = match auth {
        AuthSource::None => "none",
        AuthSource::Password(_) => "password",
        AuthSource::Token(_) | AuthSource::TokenFile => "token",
    };
    let html = String::from_utf8_lossy(INDEX).replacen(
        AUTH_META,
        &format!(r#"<meta name="molt-auth" content="{kind}">"#),
        1,
    );
    Bytes::from(html)
}

impl WebChat {
    /// From the effective config (`enabled` defaults to "the gateway binds loopback").
    pub fn new(config: &Config) -> Self {
        let ui = &config.gateway.control_ui;
        Self {
            enabled: ui.enabled_for(config.gateway.bind),
            base: ui.base(),
            allowed_origins: ui.origins(),
            index: index_for(config.auth_source()),
        }
    }

    /// Whether the page is served.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The answer to a plain `GET path` (no WebSocket upgrade), or `None` when the path is
    /// not the page's.
    pub fn page(&self, path: &str) -> Option<Response> {
        if !self.enabled {
            return None;
        }
        let rest = path.strip_prefix(self.base.as_str());
        match rest {
            Some("") | Some("chat") | Some("chat/") => {
                Some(respond("text/html; charset=utf-8", self.index.clone()))
            }
            Some(name) => ASSETS
                .iter()
                .find(|a| a.name == name || name.strip_prefix("chat/") == Some(a.name))
                .map(|a| respond(a.content_type, Bytes::from_static(a.body))),
            // `/molt` without its slash: relative asset URLs need the slash.
            None if format!("{path}/") == self.base => {
                let mut res = StatusCode::PERMANENT_REDIRECT.into_response();
                if let Ok(to) = HeaderValue::from_str(&self.base) {
                    res.headers_mut().insert(header::LOCATION, to);
                }
                Some(res)
            }
            None => None,
        }
    }

    /// Whether a WebSocket upgrade with these headers may proceed. A request without
    /// `Origin` is not from a browser page (the CLI, scripts, OpenClaw's Node client) and
    /// always may; a browser's may when its origin is the page's own (the authority the
    /// browser connected to, in `Host`) or is listed in `allowed_origins`. The token is still
    /// required either way: this only keeps other sites' pages from using a person's
    /// browser as a client.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host.trim()))
    }
}

/// A page response with the security headers every one of them carries.
fn respond(content_type: &'static str, body: Bytes) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    // The files change with the binary; a restart into a new version must not leave a
    // browser on the old script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Total bytes of the page and everything it loads.
pub fn page_weight() -> usize {
    INDEX.len() + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(base: &str, origins: &[&str]) -> WebChat {
        WebChat {
            enabled: true,
            base: base.into(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            index: index_for(AuthSource::TokenFile),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn paths_under_the_base_are_served_and_others_are_not() {
        let w = chat("/molt/", &[]);
        for p in ["/molt/", "/molt/chat", "/molt/app.js", "/molt/chat/app.css"] {
            let r = w.page(p).unwrap_or_else(|| panic!("{p} not served"));
            assert_eq!(r.status(), StatusCode::OK, "{p}");
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(
            w.page("/molt").unwrap().status(),
            StatusCode::PERMANENT_REDIRECT
        );
        for p in [
            "/",
            "/chat",
            "/molt/nope.js",
            "/molt/../etc/passwd",
            "/healthz",
        ] {
            assert!(w.page(p).is_none(), "{p}");
        }
        let off = WebChat {
            enabled: false,
            ..chat("/", &[])
        };
        assert!(off.page("/").is_none());
    }

    #[test]
    fn the_policy_forbids_inline_code_and_framing() {
        assert!(CSP.contains("script-src 'self';"));
        assert!(!CSP.contains("unsafe-inline"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        // The markup itself has no inline script or style for the policy to block.
        let html = std::str::from_utf8(INDEX).unwrap();
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("<style"));
    }

    #[test]
    fn origins_same_host_or_listed_pass_and_others_get_refused() {
        let w = chat("/", &["https://chat.example.com"]);
        assert!(w.origin_allowed(&headers(&[("host", "127.0.0.1:18789")])));
        assert!(w.origin_allowed(&headers(&[
            ("host", "127.0.0.1:18789"),
            ("origin", "http://127.0.0.1:18789")
        ])));
        assert!(w.origin_allowed(&headers(&[
            ("host", "127.0.0.1:18789"),
            ("origin", "https://Chat.Example.com")
        ])));
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:18790",
            "null",
            "http://127.0.0.1:18789.evil.example",
        ] {
            assert!(
                !w.origin_allowed(&headers(&[("host", "127.0.0.1:18789"), ("origin", bad)])),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_page_names_the_kind_of_secret_and_never_the_secret() {
        let html = std::str::from_utf8(INDEX).unwrap();
        assert_eq!(
            html.matches(AUTH_META).count(),
            1,
            "the tag is in index.html"
        );
        for (auth, kind) in [
            (AuthSource::Token("tok-123"), "token"),
            (AuthSource::TokenFile, "token"),
            (AuthSource::Password("pw-456"), "password"),
            (AuthSource::None, "none"),
        ] {
            let page = index_for(auth);
            let page = std::str::from_utf8(&page).unwrap();
            assert!(
                page.contains(&format!(r#"<meta name="molt-auth" content="{kind}">"#)),
                "{kind}"
            );
            assert!(!page.contains("tok-123") && !page.contains("pw-456"));
        }
    }

    #[test]
    fn the_page_stays_small() {
        assert!(page_weight() < 100 * 1024, "{} bytes", page_weight());
    }
}
