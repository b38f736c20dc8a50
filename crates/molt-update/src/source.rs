//! Where releases come from: a directory, or a base URL (`https://`, or `http://` on
//! loopback only). Every read is capped: the manifest and signature by fixed limits, the
//! artifact by the size the signed manifest declares.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use molt_release::manifest::Entry;
use molt_release::{ReleaseError, artifact};

/// The manifest may be at most this large.
const MAX_MANIFEST: u64 = 1024 * 1024;
/// The signature line may be at most this large.
const MAX_SIGNATURE: u64 = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte for this long aborts a download.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A release source.
pub enum Source {
    Dir(PathBuf),
    Http {
        base: reqwest::Url,
        client: reqwest::blocking::Client,
    },
}

impl Source {
    /// Parses `--source`: an `http(s)://` URL or a directory. HTTP requests carry
    /// `user_agent`.
    pub fn open(spec: &str, user_agent: &str) -> Result<Self, String> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let mut base = reqwest::Url::parse(spec)
                .map_err(|e| format!("the release source {spec:?} is not a valid URL: {e}"))?;
            if base.scheme() == "http" && !is_loopback_host(&base) {
                return Err(format!(
                    "refusing plain http for {spec}: releases are fetched over https (http only on loopback)"
                ));
            }
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            // One provider for the process; a second install fails harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                // Blocking client: bounds each connect, read and write operation.
                .timeout(READ_TIMEOUT)
                .user_agent(user_agent)
                .build()
                .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
            return Ok(Self::Http { base, client });
        }
        let dir = std::path::absolute(Path::new(spec))
            .map_err(|e| format!("the release source {spec:?}: {e}"))?;
        if !dir.is_dir() {
            return Err(format!(
                "the release source {} is not a directory (or an https:// URL)",
                dir.display()
            ));
        }
        Ok(Self::Dir(dir))
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Dir(d) => d.display().to_string(),
            Self::Http { base, .. } => base.to_string(),
        }
    }

    /// `manifest.json` and `manifest.sig`, both capped.
    pub fn manifest(&self) -> Result<(Vec<u8>, String), String> {
        let bytes = self.small("manifest.json", MAX_MANIFEST)?;
        let sig = self.small("manifest.sig", MAX_SIGNATURE).map_err(|e| {
            format!("{e} (is the release signed? `molt release sign --key KEY DIR`)")
        })?;
        let sig = String::from_utf8(sig).map_err(|_| "manifest.sig is not text".to_owned())?;
        Ok((bytes, sig))
    }

    fn small(&self, name: &str, cap: u64) -> Result<Vec<u8>, String> {
        let (mut reader, _) = self.open_file(name)?;
        let mut buf = Vec::new();
        (&mut reader)
            .take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading {name} from {}: {e}", self.describe()))?;
        if buf.len() as u64 > cap {
            return Err(format!("{name} is larger than {cap} bytes; refusing it"));
        }
        Ok(buf)
    }

    fn open_file(&self, name: &str) -> Result<(Box<dyn Read>, Option<u64>), String> {
        match self {
            Self::Dir(d) => {
                let path = d.join(name);
                let f = std::fs::File::open(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let len = f.metadata().ok().map(|m| m.len());
                Ok((Box::new(f), len))
            }
            Self::Http { base, client } => {
                let url = base
                    .join(name)
                    .map_err(|e| format!("cannot form the URL of {name}: {e}"))?;
                let resp = client
                    .get(url.clone())
                    .send()
                    .map_err(|e| format!("GET {url}: {}", with_causes(&e)))?;
                if !resp.status().is_success() {
                    return Err(format!("GET {url}: HTTP {}", resp.status()));
                }
                let len = resp.content_length();
                Ok((Box::new(resp), len))
            }
        }
    }

    /// Copies the artifact of `entry` to `dst`, refusing more bytes than the manifest
    /// declares (before reading them, when the length is announced). `progress(got, total)`
    /// is called as bytes arrive. The hash is checked separately (the verify step).
    pub fn download(
        &self,
        entry: &Entry,
        dst: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, String> {
        let (src, announced) = self.open_file(&entry.artifact)?;
        if announced.is_some_and(|n| n > entry.size) {
            return Err(ReleaseError::TooLarge {
                declared: entry.size,
            }
            .to_string());
        }
        artifact::copy_capped(src, dst, entry, |got| progress(got, entry.size)).map_err(|e| {
            match &e {
                // An HTTP read error: say what lies under reqwest's own message.
                ReleaseError::Io { what, source } => format!(
                    "downloading {}: {what}: {}",
                    entry.artifact,
                    with_causes(source)
                ),
                _ => e.to_string(),
            }
        })
    }
}

/// An error with its causes: reqwest's own message ("error sending request") hides the one
/// that tells the user what to fix (an unknown certificate issuer, a refused connection).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(Source::open("http://127.0.0.1:8080/rel", "molt/test").is_ok());
        assert!(Source::open("http://[::1]:8080/", "molt/test").is_ok());
        assert!(Source::open("http://localhost/", "molt/test").is_ok());
        let e = Source::open("http://example.com/rel", "molt/test")
            .err()
            .unwrap_or_default();
        assert!(e.contains("https"), "{e}");
        assert!(Source::open("https://example.com/rel", "molt/test").is_ok());
        assert!(Source::open("/nonexistent/dir/for/molt", "molt/test").is_err());
    }
}
