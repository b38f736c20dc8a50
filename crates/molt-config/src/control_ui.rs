//! `[gateway.control_ui]`: the web chat page the gateway serves, and which web origins may
//! open a WebSocket to it.
//!
//! ```toml
//! [gateway.control_ui]
//! enabled = true                 # default: true when the gateway binds a loopback address
//! base_path = "/"                # the page is at <base_path> and <base_path>chat
//! allowed_origins = ["https://chat.example.com"]   # besides the page's own origin
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `[gateway.control_ui]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlUiConfig {
    /// Serve the page. `None` (not written): served when the gateway binds a loopback
    /// address, not otherwise; see [`ControlUiConfig::enabled_for`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Where the page lives: `/` by default, or a prefix such as `/molt/` for a reverse proxy
    /// that forwards a sub-path. Written with or without the trailing slash.
    pub base_path: String,
    /// Web origins (`scheme://host[:port]`) besides the page's own that may open a
    /// WebSocket. A browser request from any other origin is refused with 403; clients that
    /// send no `Origin` (the CLI, scripts) are not affected.
    pub allowed_origins: Vec<String>,
}

impl Default for ControlUiConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            base_path: "/".into(),
            allowed_origins: Vec::new(),
        }
    }
}

impl ControlUiConfig {
    /// Whether the page is served by a gateway bound to `bind`.
    pub fn enabled_for(&self, bind: IpAddr) -> bool {
        self.enabled.unwrap_or(bind.is_loopback())
    }

    /// The base path with exactly one trailing slash: `/`, `/molt/`.
    pub fn base(&self) -> String {
        let trimmed = self.base_path.trim_end_matches('/');
        format!("{trimmed}/")
    }

    /// The allowed origins as browsers send them: lower case, no trailing slash.
    pub fn origins(&self) -> Vec<String> {
        self.allowed_origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect()
    }

    /// Checks the base path and every origin; the error names the key and the fix.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let p = &self.base_path;
        let path_ok = p.starts_with('/')
            && !p.contains("//")
            && !p.split('/').any(|seg| seg == "." || seg == "..")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
        if !path_ok {
            return Err((
                "gateway.control_ui.base_path",
                format!(
                    "{p:?} is not a usable path: start with '/', use letters, digits and - . _ ~ \
                     between single slashes, for example \"/\" or \"/molt/\""
                ),
            ));
        }
        for o in &self.allowed_origins {
            if let Err(why) = check_origin(o) {
                return Err((
                    "gateway.control_ui.allowed_origins",
                    format!(
                        "{o:?} {why}; write an origin as scheme://host[:port], for example \
                         \"https://chat.example.com\" or \"http://localhost:5173\""
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `o` is an origin as a browser sends it in the `Origin` header.
fn check_origin(o: &str) -> Result<(), &'static str> {
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
        .ok_or("is not an http:// or https:// origin")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("has no host");
    }
    if rest.contains(['/', '?', '#', '@', ' ', '*']) {
        return Err("has a path, query, user or wildcard, which an origin never has");
    }
    if let Some((host, port)) = rest.rsplit_once(':')
        && !host.ends_with(']')
        && (host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err("has a bad port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(base: &str, origins: &[&str]) -> ControlUiConfig {
        ControlUiConfig {
            enabled: None,
            base_path: base.into(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn enabled_by_default_only_on_loopback() {
        let c = ControlUiConfig::default();
        assert!(c.enabled_for([127, 0, 0, 1].into()));
        assert!(c.enabled_for("::1".parse().unwrap()));
        assert!(!c.enabled_for([0, 0, 0, 0].into()));
        let on = ControlUiConfig {
            enabled: Some(true),
            ..c.clone()
        };
        assert!(on.enabled_for([0, 0, 0, 0].into()));
        let off = ControlUiConfig {
            enabled: Some(false),
            ..c
        };
        assert!(!off.enabled_for([127, 0, 0, 1].into()));
    }

    #[test]
    fn base_paths_normalise_and_bad_ones_are_refused() {
        assert_eq!(with("/", &[]).base(), "/");
        assert_eq!(with("/molt", &[]).base(), "/molt/");
        assert_eq!(with("/a/b/", &[]).base(), "/a/b/");
        for bad in ["molt", "/a//b", "/../x", "/a b", "/x?y", ""] {
            let e = with(bad, &[]).validate().unwrap_err();
            assert_eq!(e.0, "gateway.control_ui.base_path", "{bad}");
        }
    }

    #[test]
    fn origins_must_look_like_origins() {
        with(
            "/",
            &[
                "https://chat.example.com",
                "http://localhost:5173",
                "http://[::1]:8080",
            ],
        )
        .validate()
        .unwrap();
        for bad in [
            "chat.example.com",
            "https://",
            "https://x.example/path",
            "*",
            "https://*.example.com",
            "http://h:port",
        ] {
            let e = with("/", &[bad]).validate().unwrap_err();
            assert_eq!(e.0, "gateway.control_ui.allowed_origins", "{bad}");
            assert!(e.1.contains("scheme://host"), "{}", e.1);
        }
        assert_eq!(
            with("/", &["HTTPS://Chat.Example.com/"]).origins(),
            ["https://chat.example.com"]
        );
    }
}
