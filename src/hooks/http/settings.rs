//! An HTTP hook's settings and the rules of their values: the URL, the
//! headers, the bearer token, the shape of the body.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;

use super::SigningKey;
use crate::secret::Secret;

/// `timeout_secs` of an HTTP hook when the file gives none.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Most `headers` a hook may set.
pub const MAX_HEADERS: usize = 32;
/// Longest `url`, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest `body_key`, in bytes.
pub const MAX_BODY_KEY_BYTES: usize = 64;
/// Longest value of one of `headers`, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 8192;

/// Headers steerhook sets itself: a hook's `headers` may not change them.
const RESERVED_HEADERS: [&str; 10] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "te",
    "upgrade",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// What the body holds (`body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape {
    /// The whole hook document of SPEC §6, logs included.
    Document,
    /// Only the run object (`null` when it could not be fetched).
    Run,
}

impl BodyShape {
    /// Reads the word of the file.
    pub fn parse(word: &str) -> Result<Self, String> {
        match word {
            "document" => Ok(Self::Document),
            "run" => Ok(Self::Run),
            other => Err(format!(
                "{other:?} is not a body; use \"document\" or \"run\""
            )),
        }
    }

    /// The word of the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Run => "run",
        }
    }
}

/// An `http`/`https` URL with a host and no credentials. `Display` hides
/// its query, where services put tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct HookUrl(Url);

impl HookUrl {
    /// Reads and checks `url`; the message does not repeat a query.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_URL_BYTES {
            return Err(format!("is longer than {MAX_URL_BYTES} bytes"));
        }
        let url = Url::parse(text.trim()).map_err(|e| {
            format!(
                "is not a URL ({e}); e.g. \"https://airflow.internal/api/v1/dags/load/dagRuns\""
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must start with https:// (or http://)".to_owned());
        }
        if url.host().is_none() {
            return Err("must name a host".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "must not contain credentials; give the token as bearer_token or bearer_token_file"
                    .to_owned(),
            );
        }
        if url.fragment().is_some() {
            return Err("must not have a #fragment (it is never sent)".to_owned());
        }
        Ok(Self(url))
    }

    /// The URL requests go to.
    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0;
        write!(f, "{}://{}", url.scheme(), url.host_str().unwrap_or(""))?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(url.path())?;
        if url.query().is_some() {
            f.write_str("?[query hidden]")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HookUrl({self})")
    }
}

/// The `headers` of a hook as HTTP headers, or the name that is refused and why.
pub fn parse_headers(headers: &BTreeMap<String, String>) -> Result<HeaderMap, (String, String)> {
    if headers.len() > MAX_HEADERS {
        return Err((
            String::new(),
            format!("sets {} headers; at most {MAX_HEADERS}", headers.len()),
        ));
    }
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let refuse = |message: String| Err((name.clone(), message));
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            return refuse("is not an HTTP header name".to_owned());
        };
        if header == reqwest::header::AUTHORIZATION {
            return refuse(
                "is a credential: give the token as bearer_token or bearer_token_file, which is never shown"
                    .to_owned(),
            );
        }
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return refuse("is set by steerhook itself".to_owned());
        }
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return refuse(format!("is longer than {MAX_HEADER_VALUE_BYTES} bytes"));
        }
        let Ok(value) = HeaderValue::from_str(value) else {
            return refuse(
                "has a value that cannot be sent in a header (visible ASCII and spaces only)"
                    .to_owned(),
            );
        };
        map.append(header, value);
    }
    Ok(map)
}

/// `Authorization: Bearer <token>`, marked sensitive so no `Debug` shows it.
pub fn bearer_header(token: &Secret) -> Result<HeaderValue, String> {
    if token.expose().is_empty() {
        return Err("is empty".to_owned());
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        "contains characters that cannot be sent in an HTTP header (a stray newline?)".to_owned()
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An HTTP hook's own settings, as its `[[hook]]` table configures them.
#[derive(Debug, Clone)]
pub struct HttpHookSettings {
    /// Where the POST goes.
    pub url: HookUrl,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// Other headers, not secret.
    pub headers: HeaderMap,
    /// Signs each request (Standard Webhooks) when set.
    pub signing_key: Option<SigningKey>,
    /// The document or only its run.
    pub body: BodyShape,
    /// Wraps the body as `{"<key>": <body>}` when set.
    pub body_key: Option<String>,
    /// Bounds a whole attempt.
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_their_query() {
        let url = HookUrl::parse("https://n8n.internal:5678/webhook/load?token=abc").unwrap();
        assert_eq!(
            url.to_string(),
            "https://n8n.internal:5678/webhook/load?[query hidden]"
        );
        for (bad, says) in [
            ("ftp://host/x", "https://"),
            ("https://user:pw@host/x", "credentials"),
            ("https://host/x#frag", "fragment"),
            ("/relative", "not a URL"),
        ] {
            let err = HookUrl::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn headers_refuse_authorization_reserved_names_and_bad_values() {
        let map = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        for (name, value, says) in [
            ("Authorization", "Bearer x", "bearer_token"),
            ("authorization", "Basic x", "bearer_token"),
            ("Webhook-Signature", "v1,x", "steerhook itself"),
            ("Content-Type", "text/plain", "steerhook itself"),
            ("bad name", "x", "header name"),
            ("X-Ok", "line\nbreak", "cannot be sent"),
        ] {
            let (key, message) = parse_headers(&map(name, value)).unwrap_err();
            assert_eq!(key, name);
            assert!(message.contains(says), "{name}: {message}");
        }
        let ok = parse_headers(&map("X-Source", "steerhook")).unwrap();
        assert_eq!(ok["x-source"], "steerhook");
    }

    #[test]
    fn the_bearer_header_is_sensitive() {
        let value = bearer_header(&Secret::new("tok")).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value, "Bearer tok");
        assert!(!format!("{value:?}").contains("tok"));
        assert!(bearer_header(&Secret::new("a\nb")).is_err());
    }
}
