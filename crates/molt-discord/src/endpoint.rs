//! Where the client talks to: Discord itself, or the origin `DISCORD_API_URL` names.

use reqwest::Url;

/// Discord's REST base for API v10.
const DISCORD_API: &str = "https://discord.com/api/v10";

/// The REST base and, when overridden, the origin every WebSocket goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// REST base without a trailing slash, e.g. `https://discord.com/api/v10`.
    pub api: String,
    /// `ws://host:port` or `wss://host:port` when `DISCORD_API_URL` is set: the gateway URL
    /// Discord hands out (and each `resume_gateway_url`) is moved to this origin.
    pub ws_origin: Option<String>,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            api: DISCORD_API.to_owned(),
            ws_origin: None,
        }
    }
}

impl Endpoint {
    /// Discord, or the `DISCORD_API_URL` override when it is set and not empty.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("DISCORD_API_URL") {
            Ok(v) if !v.trim().is_empty() => Self::parse(v.trim()),
            _ => Ok(Self::default()),
        }
    }

    /// An override such as `http://127.0.0.1:8080/api/v10`. Plain `http` is accepted only
    /// for a loopback host: anything else would send the bot token in clear text.
    pub fn parse(value: &str) -> Result<Self, String> {
        let url = Url::parse(value)
            .map_err(|e| format!("DISCORD_API_URL {value:?} is not a URL: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("DISCORD_API_URL {value:?} has no host"))?;
        let ws = match url.scheme() {
            "https" => "wss",
            "http" if is_loopback(host) => "ws",
            "http" => {
                return Err(format!(
                    "DISCORD_API_URL {value:?} uses plain http to a host that is not loopback; \
                     use https, or http only to 127.0.0.1, ::1 or localhost"
                ));
            }
            s => {
                return Err(format!(
                    "DISCORD_API_URL {value:?} has scheme {s:?}; use https (or http on loopback)"
                ));
            }
        };
        let origin = match url.port() {
            Some(p) => format!("{ws}://{}:{p}", url.host_str().unwrap_or(host)),
            None => format!("{ws}://{}", url.host_str().unwrap_or(host)),
        };
        Ok(Self {
            api: value.trim_end_matches('/').to_owned(),
            ws_origin: Some(origin),
        })
    }

    /// The WebSocket URL to dial for `url` (a gateway or resume URL from Discord): moved to
    /// the override origin if there is one, with `v=10&encoding=json`. A URL that is neither
    /// `wss` nor loopback `ws` is refused.
    pub fn gateway_url(&self, url: &str) -> Result<String, String> {
        let mut u = Url::parse(url)
            .map_err(|e| format!("the gateway URL {url:?} from Discord is not a URL: {e}"))?;
        if let Some(origin) = &self.ws_origin {
            let o = Url::parse(origin).map_err(|e| format!("{origin}: {e}"))?;
            let path = u.path().to_owned();
            u = o;
            u.set_path(&path);
        }
        match u.scheme() {
            "wss" => {}
            "ws" if u.host_str().is_some_and(is_loopback) => {}
            s => {
                return Err(format!(
                    "refusing gateway URL with scheme {s:?} to a host that is not loopback"
                ));
            }
        }
        u.set_query(Some("v=10&encoding=json"));
        Ok(u.to_string())
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_http_is_allowed_and_moves_the_websocket_there() {
        let e = Endpoint::parse("http://127.0.0.1:4321/api/v10/").unwrap();
        assert_eq!(e.api, "http://127.0.0.1:4321/api/v10");
        assert_eq!(e.ws_origin.as_deref(), Some("ws://127.0.0.1:4321"));
        assert_eq!(
            e.gateway_url("wss://gateway.discord.gg/resume").unwrap(),
            "ws://127.0.0.1:4321/resume?v=10&encoding=json"
        );
        assert!(Endpoint::parse("http://[::1]:80/api/v10").is_ok());
        assert!(Endpoint::parse("http://localhost/api/v10").is_ok());
    }

    #[test]
    fn plain_http_elsewhere_is_refused_with_the_fix() {
        let err = Endpoint::parse("http://10.0.0.5:80/api/v10").unwrap_err();
        assert!(err.contains("not loopback"), "{err}");
        assert!(Endpoint::parse("ftp://127.0.0.1/").is_err());
        assert!(Endpoint::parse("https://proxy.example/api/v10").is_ok());
    }

    #[test]
    fn discord_gateway_urls_get_the_version_and_encoding() {
        let e = Endpoint::default();
        assert_eq!(
            e.gateway_url("wss://gateway.discord.gg").unwrap(),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert!(e.gateway_url("ws://evil.example").is_err());
    }
}
