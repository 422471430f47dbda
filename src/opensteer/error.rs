//! What can go wrong talking to the API, what each failure means for the
//! caller ([`ErrorClass`]), and the bounded, redacted reading of an error body.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::secret::Secret;

/// The longest message or body excerpt kept in an error, in bytes.
pub const MAX_EXCERPT_BYTES: usize = 500;

/// The longest `details` object kept in an error (serialized), in bytes.
const MAX_DETAILS_BYTES: usize = 2048;

/// The longest API `code` we accept; longer (or odd) codes are ignored so a
/// server cannot blow up the log.
const MAX_CODE_LEN: usize = 64;

/// The error codes the API is known to send (SPEC §1). Any other code the
/// API sends is kept with the attempt and logged, but counted under one
/// metric label, so the API cannot create time series at will.
pub const API_ERROR_CODES: [&str; 7] = [
    "CLOUD_AUTH_FAILED",
    "CLOUD_CONTRACT_MISMATCH",
    "CLOUD_RATE_LIMITED",
    "CLOUD_TIMEOUT",
    "CLOUD_CAPACITY_FULL",
    "CLOUD_INTERNAL_ERROR",
    "CLOUD_RUNTIME_GONE",
];

/// The codes [`OpensteerError::code`] gives a failure the API did not name
/// (besides `HTTP_<status>`). A new one belongs here too.
pub const CLIENT_ERROR_CODES: [&str; 7] = [
    "TIMEOUT",
    "CONNECT",
    "TRANSPORT",
    "INVALID_BODY",
    "BODY_TOO_LARGE",
    "INVALID_RUN_ID",
    "INVALID_SETTINGS",
];

/// Whether `code` (from [`OpensteerError::code`]) is one steerhook knows: a
/// SPEC §1 code, one of ours, or `HTTP_<status>` (three digits, so at most
/// 900 of them).
pub fn is_known_code(code: &str) -> bool {
    API_ERROR_CODES.contains(&code)
        || CLIENT_ERROR_CODES.contains(&code)
        || code
            .strip_prefix("HTTP_")
            .is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// What the caller should do about a failed call.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorClass {
    /// Transient: timeouts, connection errors, 5xx, `CLOUD_TIMEOUT`,
    /// `CLOUD_CAPACITY_FULL`, `CLOUD_INTERNAL_ERROR`, `CLOUD_RUNTIME_GONE`,
    /// unusable bodies (not JSON, cut short). Retry with backoff.
    Retry,
    /// 429 or `CLOUD_RATE_LIMITED`: retry after the server's `Retry-After`
    /// when it gave one (callers should cap it), else with backoff.
    RetryAfter(Option<Duration>),
    /// A configuration fault: 401/403 or `CLOUD_AUTH_FAILED` (check
    /// `opensteer.api_key`), or a redirect (check `opensteer.base_url`).
    /// Retrying will not help until the operator fixes the configuration.
    AuthFault,
    /// This request will never succeed: 404, `CLOUD_CONTRACT_MISMATCH`, any
    /// other 4xx, an unusable run id, a body over `MAX_BODY_BYTES`.
    Terminal,
}

/// An error response from the API, parsed tolerantly.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The request, e.g. `GET /runs/r1` (no host, no query, no key).
    pub request: String,
    /// The HTTP status.
    pub status: u16,
    /// The API's `code`, if it sent a plausible one.
    pub code: Option<String>,
    /// The API's `error` message, bounded to [`MAX_EXCERPT_BYTES`].
    pub message: Option<String>,
    /// The API's `details`, when small enough to keep.
    pub details: Option<Value>,
    /// A bounded excerpt of the body when it was not the JSON error shape.
    pub excerpt: Option<String>,
    /// The `Retry-After` header, resolved against our clock.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// The class, decided by a known `code` first, else by the status.
    pub fn class(&self) -> ErrorClass {
        classify(self.status, self.code.as_deref(), self.retry_after)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the Opensteer API answered {} with HTTP {}",
            self.request, self.status
        )?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, " ({message:?})")?;
        } else if let Some(excerpt) = &self.excerpt {
            write!(f, " (body: {excerpt:?})")?;
        }
        let hint = match (self.class(), self.code.as_deref()) {
            (_, Some("CLOUD_CONTRACT_MISMATCH")) => {
                "; the API no longer accepts requests in this form: steerhook may need upgrading"
                    .to_owned()
            }
            (ErrorClass::AuthFault, _) if (300..400).contains(&self.status) => {
                "; redirects are not followed (they could carry the API key to another host): \
                 set opensteer.base_url to the final address"
                    .to_owned()
            }
            (ErrorClass::AuthFault, _) => {
                "; the API key was rejected: check opensteer.api_key (or opensteer.api_key_file)"
                    .to_owned()
            }
            (ErrorClass::RetryAfter(Some(after)), _) => {
                format!("; rate limited, Retry-After {}s", after.as_secs())
            }
            (ErrorClass::RetryAfter(None), _) => "; rate limited".to_owned(),
            (ErrorClass::Terminal, _) if self.status == 404 => {
                "; the run does not exist, or this API key cannot see it".to_owned()
            }
            // What happens next (a retry, or giving up) is the caller's to say.
            (ErrorClass::Retry | ErrorClass::Terminal, _) => String::new(),
        };
        f.write_str(&hint)
    }
}

/// Everything that can go wrong talking to the Opensteer API.
#[derive(Debug, thiserror::Error)]
pub enum OpensteerError {
    /// The settings cannot make a client. Names the offending key.
    #[error("invalid Opensteer API settings: {0}")]
    InvalidSettings(String),
    /// The run id cannot be put in a URL path (empty, `.` or `..`).
    #[error("run id {run_id:?} cannot be requested from the Opensteer API: {reason}")]
    InvalidRunId {
        /// The offending run id.
        run_id: String,
        /// Why.
        reason: &'static str,
    },
    /// No complete answer within `request_timeout` (or `connect_timeout`).
    #[error("the Opensteer API did not answer {request} within {timeout:?}")]
    Timeout {
        /// e.g. `GET /runs/r1`.
        request: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// The TCP or TLS connection could not be made.
    #[error(
        "could not connect to the Opensteer API at {endpoint} ({detail}); \
         check opensteer.base_url and the network"
    )]
    Connect {
        /// `scheme://host:port` of the API.
        endpoint: String,
        /// The innermost causes, e.g. "Connection refused (os error 111)".
        detail: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Any other transport failure (connection reset, protocol error...).
    #[error("the request {request} to the Opensteer API failed ({detail})")]
    Transport {
        /// e.g. `GET /runs/r1`.
        request: String,
        /// The causes.
        detail: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with a non-2xx status.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// A 2xx answer whose body cannot be used: not JSON, truncated, too large.
    #[error("the Opensteer API answered {request} with an unusable body: {reason}")]
    InvalidBody {
        /// e.g. `GET /runs/r1`.
        request: String,
        /// What was wrong, bounded.
        reason: String,
        /// `INVALID_BODY` or `BODY_TOO_LARGE`.
        code: &'static str,
    },
}

impl OpensteerError {
    /// What the caller should do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::InvalidSettings(_) => ErrorClass::AuthFault,
            Self::InvalidRunId { .. } => ErrorClass::Terminal,
            Self::Timeout { .. } | Self::Connect { .. } | Self::Transport { .. } => {
                ErrorClass::Retry
            }
            Self::Api(api) => api.class(),
            // Asking again gets the same body: the page is lost, not late.
            Self::InvalidBody {
                code: "BODY_TOO_LARGE",
                ..
            } => ErrorClass::Terminal,
            Self::InvalidBody { .. } => ErrorClass::Retry,
        }
    }

    /// The API's `code` when it sent one, else ours: `HTTP_<status>`, or
    /// one of [`CLIENT_ERROR_CODES`] (a code not listed there is counted as
    /// `OTHER` in the metrics).
    pub fn code(&self) -> String {
        match self {
            Self::InvalidSettings(_) => "INVALID_SETTINGS".to_owned(),
            Self::InvalidRunId { .. } => "INVALID_RUN_ID".to_owned(),
            Self::Timeout { .. } => "TIMEOUT".to_owned(),
            Self::Connect { .. } => "CONNECT".to_owned(),
            Self::Transport { .. } => "TRANSPORT".to_owned(),
            Self::Api(api) => api
                .code
                .clone()
                .unwrap_or_else(|| format!("HTTP_{}", api.status)),
            Self::InvalidBody { code, .. } => (*code).to_owned(),
        }
    }

    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(api) => Some(api.status),
            _ => None,
        }
    }

    /// The `Retry-After` the API sent with an error (also on 503), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api(api) => api.retry_after,
            _ => None,
        }
    }

    pub(super) fn invalid_body(request: &str, reason: impl fmt::Display) -> Self {
        Self::InvalidBody {
            request: request.to_owned(),
            reason: bound_text(&reason.to_string()),
            code: "INVALID_BODY",
        }
    }
}

/// The class of an API error: a known `code` decides, else the status.
pub(super) fn classify(
    status: u16,
    code: Option<&str>,
    retry_after: Option<Duration>,
) -> ErrorClass {
    match code {
        Some("CLOUD_AUTH_FAILED") => return ErrorClass::AuthFault,
        Some("CLOUD_RATE_LIMITED") => return ErrorClass::RetryAfter(retry_after),
        Some(
            "CLOUD_TIMEOUT" | "CLOUD_CAPACITY_FULL" | "CLOUD_INTERNAL_ERROR" | "CLOUD_RUNTIME_GONE",
        ) => return ErrorClass::Retry,
        Some("CLOUD_CONTRACT_MISMATCH") => return ErrorClass::Terminal,
        _ => {}
    }
    match status {
        401 | 403 => ErrorClass::AuthFault,
        429 => ErrorClass::RetryAfter(retry_after),
        // A request timeout (usually from a proxy in front of the API) is
        // transient, unlike the other 4xx.
        408 => ErrorClass::Retry,
        // We do not follow redirects (they would carry the key elsewhere), so
        // one means opensteer.base_url is wrong: a configuration fault, which
        // pauses processing instead of dropping every event's enrichment.
        300..=399 => ErrorClass::AuthFault,
        400..=499 => ErrorClass::Terminal,
        _ => ErrorClass::Retry,
    }
}

/// The parts of an error body we keep.
#[derive(Debug, Default)]
pub(super) struct ParsedErrorBody {
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
    pub(super) details: Option<Value>,
    pub(super) excerpt: Option<String>,
}

/// Parses `{"error": "...", "code": "...", "details": {...}}` tolerantly:
/// missing fields are fine, `error` may be an object holding `message` and
/// `code`, anything else leaves a bounded excerpt. Whatever the server
/// echoes, the API key is redacted from it.
pub(super) fn parse_error_body(body: &[u8], api_key: &Secret) -> ParsedErrorBody {
    let redact = |s: &str| {
        let key = api_key.expose();
        if key.is_empty() {
            s.to_owned()
        } else {
            s.replace(key, "[redacted]")
        }
    };
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX_EXCERPT_BYTES * 4)]);
        let excerpt = bound_text(&redact(&text));
        return ParsedErrorBody {
            excerpt: (!excerpt.is_empty()).then_some(excerpt),
            ..Default::default()
        };
    };
    let nested = map.get("error").and_then(Value::as_object);
    let field = |name: &str| map.get(name).or_else(|| nested.and_then(|n| n.get(name)));
    let code = field("code")
        .and_then(Value::as_str)
        .filter(|c| is_plausible_code(c))
        .map(str::to_owned);
    let message = map
        .get("error")
        .and_then(Value::as_str)
        .or_else(|| field("message").and_then(Value::as_str))
        .map(|m| bound_text(&redact(m)));
    let details = field("details").filter(|d| {
        let text = d.to_string();
        let key = api_key.expose();
        text.len() <= MAX_DETAILS_BYTES && (key.is_empty() || !text.contains(key))
    });
    let excerpt = if code.is_none() && message.is_none() {
        Some(bound_text(&redact(&String::from_utf8_lossy(
            &body[..body.len().min(MAX_EXCERPT_BYTES * 4)],
        ))))
    } else {
        None
    };
    ParsedErrorBody {
        code,
        message,
        details: details.cloned(),
        excerpt,
    }
}

/// An API code we are willing to use as a metric label: `[A-Za-z0-9_.-]{1,64}`.
fn is_plausible_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// At most [`MAX_EXCERPT_BYTES`] of `text` (cut on a char boundary, marked
/// with `…`), control characters turned into spaces so one error is one log line.
pub(super) fn bound_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_EXCERPT_BYTES + 3));
    for c in text.trim().chars() {
        if out.len() + c.len_utf8() > MAX_EXCERPT_BYTES {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn classify_decides_by_code_first_then_status() {
        let after = Some(Duration::from_secs(3));
        let cases: [(u16, Option<&str>, ErrorClass); 17] = [
            (401, Some("CLOUD_AUTH_FAILED"), ErrorClass::AuthFault),
            (500, Some("CLOUD_AUTH_FAILED"), ErrorClass::AuthFault),
            (400, Some("CLOUD_TIMEOUT"), ErrorClass::Retry),
            (503, Some("CLOUD_CAPACITY_FULL"), ErrorClass::Retry),
            (500, Some("CLOUD_INTERNAL_ERROR"), ErrorClass::Retry),
            (410, Some("CLOUD_RUNTIME_GONE"), ErrorClass::Retry),
            (409, Some("CLOUD_CONTRACT_MISMATCH"), ErrorClass::Terminal),
            (
                400,
                Some("CLOUD_RATE_LIMITED"),
                ErrorClass::RetryAfter(after),
            ),
            (429, None, ErrorClass::RetryAfter(after)),
            (401, None, ErrorClass::AuthFault),
            (403, Some("SOMETHING_NEW"), ErrorClass::AuthFault),
            (404, None, ErrorClass::Terminal),
            (422, None, ErrorClass::Terminal),
            (408, None, ErrorClass::Retry),
            (500, None, ErrorClass::Retry),
            (502, Some("SOMETHING_NEW"), ErrorClass::Retry),
            (302, None, ErrorClass::AuthFault),
        ];
        for (status, code, expected) in cases {
            assert_eq!(
                classify(status, code, after),
                expected,
                "status {status} code {code:?}"
            );
        }
    }

    #[test]
    fn parse_error_body_is_tolerant_bounded_and_redacts_the_key() {
        let key = Secret::new("osk_live_secret");
        let full = parse_error_body(
            br#"{"error":"nope","code":"CLOUD_AUTH_FAILED","details":{"a":1}}"#,
            &key,
        );
        assert_eq!(full.code.as_deref(), Some("CLOUD_AUTH_FAILED"));
        assert_eq!(full.message.as_deref(), Some("nope"));
        assert_eq!(full.details, Some(json!({"a": 1})));
        assert_eq!(full.excerpt, None);

        let nested = parse_error_body(br#"{"error":{"message":"m","code":"X_Y"}}"#, &key);
        assert_eq!(
            (nested.code.as_deref(), nested.message.as_deref()),
            (Some("X_Y"), Some("m"))
        );

        let odd_code = parse_error_body(br#"{"code":"no spaces allowed here"}"#, &key);
        assert_eq!(odd_code.code, None);
        assert!(odd_code.excerpt.is_some());

        let html = "<html>".repeat(1000);
        let garbage = parse_error_body(html.as_bytes(), &key);
        let excerpt = garbage.excerpt.expect("an excerpt of a non-JSON body");
        assert!(
            excerpt.len() <= MAX_EXCERPT_BYTES + '…'.len_utf8(),
            "excerpt is {} bytes",
            excerpt.len()
        );

        let echo = parse_error_body(
            br#"{"error":"bad key osk_live_secret","details":{"key":"osk_live_secret"}}"#,
            &key,
        );
        assert_eq!(echo.message.as_deref(), Some("bad key [redacted]"));
        assert_eq!(echo.details, None);
        let echo_text = parse_error_body(b"bad key osk_live_secret\n", &key);
        assert_eq!(echo_text.excerpt.as_deref(), Some("bad key [redacted]"));

        assert!(parse_error_body(b"", &key).excerpt.is_none());
    }

    #[test]
    fn bound_text_cuts_on_a_char_boundary_and_flattens_control_characters() {
        let long = "é".repeat(MAX_EXCERPT_BYTES);
        let cut = bound_text(&long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_EXCERPT_BYTES + '…'.len_utf8());
        assert_eq!(bound_text(" a\nb\r\tc "), "a b  c");
    }

    proptest! {
        #[test]
        fn parse_error_body_never_panics_and_stays_bounded(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            let parsed = parse_error_body(&body, &Secret::new("osk_x"));
            for text in [parsed.message, parsed.excerpt].into_iter().flatten() {
                prop_assert!(text.len() <= MAX_EXCERPT_BYTES + '…'.len_utf8());
            }
        }
    }
}
