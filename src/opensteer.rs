//! The Opensteer API client: one run, one page of its logs, and a probe for
//! `steerhook doctor` (SPEC.md §1, §5).
//!
//! What this module guarantees, and why:
//! - Every failure is an [`OpensteerError`] with a [`ErrorClass`] (what the
//!   dispatcher should do) and a [`code`](OpensteerError::code) (what metrics
//!   and the event log show). The API's own `code` decides the class when it
//!   is one we know; the HTTP status decides otherwise.
//! - Response bodies are read with a cap ([`MAX_BODY_BYTES`]), so a hostile or
//!   broken server cannot exhaust memory; the whole request, body included, is
//!   bounded by `request_timeout`.
//! - The API key lives only in a header marked sensitive. It is never put in
//!   a URL, a log line or an error message; redirects are not followed, since
//!   reqwest would carry our custom `x-api-key` header to any host a redirect
//!   names.
//! - In-flight requests are bounded by one semaphore shared by every clone.
//!
//! The paging loop is not here: the dispatcher persists its progress page by
//! page, and calls [`OpensteerClient::fetch_logs_page`] once per page.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_LENGTH, DATE, RETRY_AFTER,
};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::clock::{Clock, SystemClock};
use crate::secret::Secret;

/// The largest response body read from the API, in bytes; a larger body is an
/// `BODY_TOO_LARGE` error (retryable: the next attempt may get a sane answer).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How much of an error response body is read, in bytes: enough for any
/// `{"error","code","details"}` document, small enough to not matter.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

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

/// The header carrying the API key.
const API_KEY_HEADER: &str = "x-api-key";

/// The run id the probe asks for; it does not exist, so a 404 means the key
/// was accepted and the route is there.
pub const PROBE_RUN_ID: &str = "steerhook-doctor-probe";

/// Default `logLimit` (SPEC.md §3 `opensteer.log_page_size`).
pub const DEFAULT_LOG_PAGE_SIZE: u32 = 200;
/// Default TCP/TLS connect timeout, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Default whole-request timeout (body included), in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default bound on in-flight API requests.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4;

/// Keys that may hold a logs page's entries, in order of preference (SPEC.md §5).
const ENTRY_KEYS: [&str; 4] = ["logs", "items", "data", "entries"];
/// Top-level keys that may hold the next (older) cursor, in order (SPEC.md §5);
/// `pagination.nextCursor` comes after them.
const CURSOR_KEYS: [&str; 4] = [
    "nextCursor",
    "nextBeforeLogCursor",
    "beforeLogCursor",
    "cursor",
];

/// How to reach the Opensteer API.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// e.g. `https://api.opensteer.com`; a trailing slash and a path prefix are fine.
    pub base_url: String,
    /// Sent as `x-api-key`; never printed.
    pub api_key: Secret,
    /// Sent as `logLimit`.
    pub log_page_size: u32,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// The whole request, including reading the body.
    pub request_timeout: Duration,
    /// Bound on in-flight API requests across all clones of the client.
    pub max_concurrent_requests: usize,
}

impl ClientSettings {
    /// Settings with the default page size, timeouts and concurrency.
    pub fn with_defaults(base_url: impl Into<String>, api_key: Secret) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            log_page_size: DEFAULT_LOG_PAGE_SIZE,
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

/// A handle on the Opensteer API; cheap to clone, clones share the
/// connection pool and the concurrency bound.
#[derive(Clone)]
pub struct OpensteerClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    log_page_size: u32,
    request_timeout: Duration,
    /// Never closed: `acquire` on it cannot fail.
    permits: Semaphore,
    /// Kept to redact it from anything a server echoes back.
    api_key: Secret,
    /// Reads "now" for `Retry-After` dates.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for OpensteerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpensteerClient")
            .field("base", &self.inner.base.as_str())
            .field("log_page_size", &self.inner.log_page_size)
            .field("request_timeout", &self.inner.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The answer of `GET /runs/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResponse {
    /// The run object, per [`parse_run`].
    pub run: Value,
    /// The body exactly as received, so nothing is lost when the shape differs.
    pub raw: String,
}

/// One page of `GET /runs/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsPage {
    /// The entries as the API sent them: oldest first within the page.
    pub entries: Vec<Value>,
    /// The cursor of the next (older) page, if the API says there is one.
    pub next_cursor: Option<String>,
}

/// What `steerhook doctor` learns from [`OpensteerClient::probe`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// The HTTP status of the probe request.
    pub status: u16,
    /// The server's `Date` header, for the clock-skew check.
    pub server_date: Option<SystemTime>,
    /// What the status (and code) say about the API key.
    pub key: KeyCheck,
    /// The API's error `code`, when it sent one.
    pub code: Option<String>,
    /// How long the request took; the skew check should allow for it.
    pub round_trip: Duration,
}

/// The verdict of the probe on the API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// 404 (the probe run does not exist, but we were allowed to ask) or 2xx.
    Accepted,
    /// 401/403 or `CLOUD_AUTH_FAILED`.
    Rejected,
    /// Anything else (5xx, 429, redirects...): no verdict.
    Unknown,
}

/// What the caller should do about a failed call.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorClass {
    /// Transient: timeouts, connection errors, 5xx, `CLOUD_TIMEOUT`,
    /// `CLOUD_CAPACITY_FULL`, `CLOUD_INTERNAL_ERROR`, `CLOUD_RUNTIME_GONE`,
    /// unusable bodies. Retry with backoff.
    Retry,
    /// 429 or `CLOUD_RATE_LIMITED`: retry after the server's `Retry-After`
    /// when it gave one (callers should cap it), else with backoff.
    RetryAfter(Option<Duration>),
    /// A configuration fault: 401/403 or `CLOUD_AUTH_FAILED` (check
    /// `opensteer.api_key`), or a redirect (check `opensteer.base_url`).
    /// Retrying will not help until the operator fixes the configuration.
    AuthFault,
    /// This request will never succeed: 404, `CLOUD_CONTRACT_MISMATCH`, any
    /// other 4xx, an unusable run id.
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
                format!("; rate limited, will retry after {}s", after.as_secs())
            }
            (ErrorClass::RetryAfter(None), _) => "; rate limited, will retry later".to_owned(),
            (ErrorClass::Retry, _) => "; will retry".to_owned(),
            (ErrorClass::Terminal, _) if self.status == 404 => {
                "; the run does not exist or this API key cannot see it; not retried".to_owned()
            }
            (ErrorClass::Terminal, _) => "; not retried".to_owned(),
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
    #[error("the Opensteer API did not answer {request} within {timeout:?}; will retry")]
    Timeout {
        /// e.g. `GET /runs/r1`.
        request: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// The TCP or TLS connection could not be made.
    #[error(
        "could not connect to the Opensteer API at {endpoint} ({detail}); will retry. \
         Check opensteer.base_url and the network"
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
    #[error("the request {request} to the Opensteer API failed ({detail}); will retry")]
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
    #[error("the Opensteer API answered {request} with an unusable body: {reason}; will retry")]
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

    fn invalid_body(request: &str, reason: impl fmt::Display) -> Self {
        Self::InvalidBody {
            request: request.to_owned(),
            reason: bound_text(&reason.to_string()),
            code: "INVALID_BODY",
        }
    }
}

/// The class of an API error: a known `code` decides, else the status.
fn classify(status: u16, code: Option<&str>, retry_after: Option<Duration>) -> ErrorClass {
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

impl OpensteerClient {
    /// A client for `settings`, reading the system clock.
    pub fn new(settings: ClientSettings) -> Result<Self, OpensteerError> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// A client whose "now" (for `Retry-After` dates) comes from `clock`.
    pub fn with_clock(
        settings: ClientSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpensteerError> {
        let invalid = |m: &str| OpensteerError::InvalidSettings(m.to_owned());
        let base = Url::parse(settings.base_url.trim()).map_err(|e| {
            OpensteerError::InvalidSettings(format!("opensteer.base_url is not a URL: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(
                "opensteer.base_url must start with https:// (or http://)",
            ));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid(
                "opensteer.base_url must name a host, e.g. https://api.opensteer.com",
            ));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "opensteer.base_url must not contain credentials; the key goes in opensteer.api_key",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid(
                "opensteer.base_url must not have a query or fragment",
            ));
        }
        if settings.api_key.expose().is_empty() {
            return Err(invalid("opensteer.api_key is empty"));
        }
        // The error of from_str would not print the value, but say nothing of it anyway.
        let mut key = HeaderValue::from_str(settings.api_key.expose()).map_err(|_| {
            invalid("opensteer.api_key contains characters that cannot be sent in an HTTP header (a stray newline?)")
        })?;
        key.set_sensitive(true);
        if settings.log_page_size == 0 {
            return Err(invalid("opensteer.log_page_size must be at least 1"));
        }
        if settings.max_concurrent_requests == 0
            || settings.max_concurrent_requests > Semaphore::MAX_PERMITS
        {
            return Err(invalid(
                "the Opensteer request concurrency must be at least 1",
            ));
        }
        if settings.connect_timeout.is_zero() || settings.request_timeout.is_zero() {
            return Err(invalid(
                "the Opensteer API timeouts must be longer than zero",
            ));
        }

        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(API_KEY_HEADER), key);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("steerhook/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                OpensteerError::InvalidSettings(format!("cannot build the HTTP client: {e}"))
            })?;

        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                log_page_size: settings.log_page_size,
                request_timeout: settings.request_timeout,
                permits: Semaphore::new(settings.max_concurrent_requests),
                api_key: settings.api_key,
                clock,
            }),
        })
    }

    /// `GET {base}/runs/{id}`: the run object (see [`parse_run`]) and the raw body.
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn fetch_run(&self, run_id: &str) -> Result<RunResponse, OpensteerError> {
        let url = self.run_url(run_id, false)?;
        let (request, body) = self.get_success(url).await?;
        let raw = String::from_utf8(body).map_err(|e| OpensteerError::invalid_body(&request, e))?;
        let value: Value =
            serde_json::from_str(&raw).map_err(|e| OpensteerError::invalid_body(&request, e))?;
        Ok(RunResponse {
            run: parse_run(value),
            raw,
        })
    }

    /// `GET {base}/runs/{id}/logs?logLimit=N[&beforeLogCursor=C]`: one page,
    /// parsed per [`parse_logs_page`]. `before_cursor` is the `next_cursor`
    /// of the previous (newer) page; `None` asks for the newest page.
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn fetch_logs_page(
        &self,
        run_id: &str,
        before_cursor: Option<&str>,
    ) -> Result<LogsPage, OpensteerError> {
        let mut url = self.run_url(run_id, true)?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("logLimit", &self.inner.log_page_size.to_string());
            if let Some(cursor) = before_cursor {
                query.append_pair("beforeLogCursor", cursor);
            }
        }
        let (request, body) = self.get_success(url).await?;
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| OpensteerError::invalid_body(&request, e))?;
        parse_logs_page_owned(value).map_err(|e| match e {
            OpensteerError::InvalidBody { reason, code, .. } => OpensteerError::InvalidBody {
                request,
                reason,
                code,
            },
            other => other,
        })
    }

    /// `GET {base}/runs/steerhook-doctor-probe`: reachability, the key's
    /// verdict and the server's `Date`. Any HTTP answer is `Ok`; only a
    /// transport failure (timeout, refused, TLS) is `Err`.
    ///
    /// A 404 counts as "key accepted" because the probe run does not exist;
    /// note that a wrong `base_url` pointing at some other web server also
    /// answers 404, so `doctor` should show the status and code too.
    #[tracing::instrument(skip_all)]
    pub async fn probe(&self) -> Result<ProbeResult, OpensteerError> {
        let url = self.run_url(PROBE_RUN_ID, false)?;
        let started = Instant::now();
        let response = self.send(url).await?;
        let round_trip = started.elapsed();
        let code = if response.status.is_success() {
            None
        } else {
            parse_error_body(&response.body, &self.inner.api_key).code
        };
        let status = response.status.as_u16();
        let key = if code.as_deref() == Some("CLOUD_AUTH_FAILED") || matches!(status, 401 | 403) {
            KeyCheck::Rejected
        } else if status == 404 || response.status.is_success() {
            KeyCheck::Accepted
        } else {
            KeyCheck::Unknown
        };
        Ok(ProbeResult {
            status,
            server_date: response.date,
            key,
            code,
            round_trip,
        })
    }

    /// `{base}/runs/{run_id}[/logs]`, the run id as one encoded path segment.
    fn run_url(&self, run_id: &str, logs: bool) -> Result<Url, OpensteerError> {
        // The url crate silently drops "." and ".." segments, which would turn
        // /runs/.. into a request for another resource.
        let reason = match run_id {
            "" => Some("it is empty"),
            "." | ".." => Some("it is a relative path segment"),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(OpensteerError::InvalidRunId {
                run_id: run_id.to_owned(),
                reason,
            });
        }
        let mut url = self.inner.base.clone();
        {
            // new() rejected bases that cannot be a base, so this cannot fail;
            // map it anyway rather than panic.
            let mut segments = url.path_segments_mut().map_err(|()| {
                OpensteerError::InvalidSettings("opensteer.base_url cannot have a path".to_owned())
            })?;
            segments.pop_if_empty().push("runs").push(run_id);
            if logs {
                segments.push("logs");
            }
        }
        Ok(url)
    }

    /// GET `url`; a 2xx body (bounded) or the error the answer amounts to.
    async fn get_success(&self, url: Url) -> Result<(String, Vec<u8>), OpensteerError> {
        let request = describe(&url);
        let response = self.send(url).await?;
        if !response.status.is_success() {
            let retry_after = response
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, self.inner.clock.now()));
            let parsed = parse_error_body(&response.body, &self.inner.api_key);
            return Err(OpensteerError::Api(Box::new(ApiError {
                request,
                status: response.status.as_u16(),
                code: parsed.code,
                message: parsed.message,
                details: parsed.details,
                excerpt: parsed.excerpt,
                retry_after,
            })));
        }
        match response.end {
            BodyEnd::Complete => Ok((request, response.body)),
            BodyEnd::TooLarge => Err(OpensteerError::InvalidBody {
                request,
                reason: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                code: "BODY_TOO_LARGE",
            }),
            BodyEnd::Failed(e) => Err(self.transport_error(e, &request)),
        }
    }

    /// Sends one GET under the concurrency bound and the request timeout,
    /// reading at most [`MAX_BODY_BYTES`] (2xx) or [`MAX_ERROR_BODY_BYTES`].
    async fn send(&self, url: Url) -> Result<RawResponse, OpensteerError> {
        let request = describe(&url);
        let endpoint = endpoint(&url);
        // The permit is held until the body is read: it bounds sockets and memory.
        let _permit = match self.inner.permits.acquire().await {
            Ok(permit) => permit,
            // Only a closed semaphore fails, and Inner never closes it.
            Err(_) => {
                return Err(OpensteerError::InvalidSettings(
                    "the request limiter is closed".to_owned(),
                ))
            }
        };
        let started = Instant::now();
        // reqwest's own timeout covers connect, headers and body; this outer
        // one also covers our body loop, so no path can outlive the limit.
        let outcome = tokio::time::timeout(self.inner.request_timeout, async {
            let mut response = self.inner.http.get(url).send().await?;
            let status = response.status();
            let headers = response.headers();
            let date = header_str(headers, DATE).and_then(|v| httpdate::parse_http_date(v).ok());
            let retry_after = header_str(headers, RETRY_AFTER).map(bound_text);
            let limit = if status.is_success() {
                MAX_BODY_BYTES
            } else {
                MAX_ERROR_BODY_BYTES
            };
            // An error body is only read for its message: a prefix will do.
            let (body, end) = read_bounded(&mut response, limit, status.is_success()).await;
            Ok::<_, reqwest::Error>(RawResponse {
                status,
                date,
                retry_after,
                body,
                end,
            })
        })
        .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(Ok(response)) => {
                tracing::debug!(%request, status = response.status.as_u16(), latency_ms, "Opensteer API answered");
                Ok(response)
            }
            Ok(Err(e)) => {
                let error = self.transport_error_at(e, &request, endpoint);
                tracing::debug!(%request, latency_ms, error = %error, "Opensteer API request failed");
                Err(error)
            }
            Err(_elapsed) => {
                tracing::debug!(%request, latency_ms, "Opensteer API request timed out");
                Err(OpensteerError::Timeout {
                    request,
                    timeout: self.inner.request_timeout,
                })
            }
        }
    }

    fn transport_error(&self, e: reqwest::Error, request: &str) -> OpensteerError {
        let endpoint = endpoint(&self.inner.base);
        self.transport_error_at(e, request, endpoint)
    }

    fn transport_error_at(
        &self,
        e: reqwest::Error,
        request: &str,
        endpoint: String,
    ) -> OpensteerError {
        if e.is_timeout() {
            return OpensteerError::Timeout {
                request: request.to_owned(),
                timeout: self.inner.request_timeout,
            };
        }
        let detail = bound_text(&source_chain(&e));
        if e.is_connect() {
            OpensteerError::Connect {
                endpoint,
                detail,
                source: e,
            }
        } else {
            OpensteerError::Transport {
                request: request.to_owned(),
                detail,
                source: e,
            }
        }
    }
}

/// A response as read off the wire, before interpretation.
struct RawResponse {
    status: StatusCode,
    date: Option<SystemTime>,
    retry_after: Option<String>,
    body: Vec<u8>,
    end: BodyEnd,
}

/// How reading a body ended.
enum BodyEnd {
    Complete,
    /// More than the limit; `body` holds the first `limit` bytes.
    TooLarge,
    /// The transport failed mid-body; `body` holds what arrived.
    Failed(reqwest::Error),
}

/// Reads at most `limit` bytes of the body, chunk by chunk. With
/// `all_or_nothing`, a body whose Content-Length is over the limit is not
/// downloaded at all (the caller has no use for a prefix).
async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
    all_or_nothing: bool,
) -> (Vec<u8>, BodyEnd) {
    let announced =
        header_str(response.headers(), CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    if all_or_nothing && announced.is_some_and(|n| n > limit) {
        return (Vec::new(), BodyEnd::TooLarge);
    }
    let mut body = Vec::with_capacity(announced.unwrap_or(0).min(limit));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return (body, BodyEnd::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body, BodyEnd::Complete),
            Err(e) => return (body, BodyEnd::Failed(e)),
        }
    }
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /runs/r1/logs`: the request as shown in errors and logs. The query
/// (cursor) is left out to keep it short; the key is never in the URL.
fn describe(url: &Url) -> String {
    format!("GET {}", url.path())
}

/// `scheme://host:port` of a URL.
fn endpoint(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The causes below the top error, joined: the top of a reqwest error only
/// repeats the URL, the useful part ("Connection refused") is underneath.
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// The parts of an error body we keep.
#[derive(Debug, Default)]
struct ParsedErrorBody {
    code: Option<String>,
    message: Option<String>,
    details: Option<Value>,
    excerpt: Option<String>,
}

/// Parses `{"error": "...", "code": "...", "details": {...}}` tolerantly:
/// missing fields are fine, `error` may be an object holding `message` and
/// `code`, anything else leaves a bounded excerpt. Whatever the server
/// echoes, the API key is redacted from it.
fn parse_error_body(body: &[u8], api_key: &Secret) -> ParsedErrorBody {
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
fn bound_text(text: &str) -> String {
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

/// The run object of a `GET /runs/{id}` body (SPEC.md §5): the body itself,
/// or, when it is an object with a `run` object inside, that inner object.
pub fn parse_run(body: Value) -> Value {
    match body {
        Value::Object(mut map) if map.get("run").is_some_and(Value::is_object) => {
            map.remove("run").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// One logs page (SPEC.md §5), read tolerantly:
///
/// - entries: the first array among `logs`, `items`, `data`, `entries`; a
///   body that is itself an array is the entries, with no cursor;
/// - next (older) cursor: the first non-empty string among `nextCursor`,
///   `nextBeforeLogCursor`, `beforeLogCursor`, `cursor`,
///   `pagination.nextCursor`; when there is none but `hasMore` is `true`,
///   the `cursor` or else the `id` (a string, or a number as its decimal
///   text) of the oldest entry. Entries within a page are in chronological
///   order, oldest first, so the oldest entry is the FIRST one;
/// - an object with no entries array is an empty page with no cursor (which
///   ends paging), whatever else it holds;
/// - a body that is neither an object nor an array (`null`, a string...) is
///   an `INVALID_BODY` error, retryable.
pub fn parse_logs_page(body: &Value) -> Result<LogsPage, OpensteerError> {
    parse_logs_page_owned(body.clone())
}

/// [`parse_logs_page`] without copying the (possibly large) entries.
fn parse_logs_page_owned(body: Value) -> Result<LogsPage, OpensteerError> {
    let mut map = match body {
        Value::Array(entries) => {
            return Ok(LogsPage {
                entries,
                next_cursor: None,
            })
        }
        Value::Object(map) => map,
        other => {
            return Err(OpensteerError::invalid_body(
                "a logs page",
                format_args!("expected an object or an array, got {}", json_kind(&other)),
            ))
        }
    };
    let Some(entries_key) = ENTRY_KEYS
        .into_iter()
        .find(|k| map.get(*k).is_some_and(Value::is_array))
    else {
        return Ok(LogsPage::default());
    };
    let entries = match map.remove(entries_key) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(), // just checked to be an array
    };
    let explicit = CURSOR_KEYS
        .into_iter()
        .find_map(|k| non_empty_str(map.get(k)))
        .or_else(|| non_empty_str(map.get("pagination").and_then(|p| p.get("nextCursor"))));
    let next_cursor = match explicit {
        Some(cursor) => Some(cursor),
        None if map.get("hasMore") == Some(&Value::Bool(true)) => {
            entries.first().and_then(entry_cursor)
        }
        None => None,
    };
    Ok(LogsPage {
        entries,
        next_cursor,
    })
}

fn non_empty_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The cursor an entry stands for: its `cursor`, else its `id`; strings or numbers.
fn entry_cursor(entry: &Value) -> Option<String> {
    let as_cursor = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    as_cursor(entry.get("cursor")).or_else(|| as_cursor(entry.get("id")))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date
/// resolved against `now` (a date in the past is zero). `None` when it is
/// neither, or the number does not fit. Callers should cap the result.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    fn page(body: Value) -> LogsPage {
        parse_logs_page(&body).unwrap_or_else(|e| panic!("{body} should parse: {e}"))
    }

    #[test]
    fn parse_run_returns_a_bare_body_unchanged() {
        let body = json!({"id": "r1", "status": "succeeded"});
        assert_eq!(parse_run(body.clone()), body);
    }

    #[test]
    fn parse_run_unwraps_an_inner_run_object() {
        let body = json!({"run": {"id": "r1"}, "meta": 1});
        assert_eq!(parse_run(body), json!({"id": "r1"}));
    }

    #[test]
    fn parse_run_keeps_the_body_when_run_is_not_an_object() {
        for body in [
            json!({"run": "r1", "id": "x"}),
            json!({"run": null}),
            json!([1]),
            json!("s"),
            json!(null),
        ] {
            assert_eq!(parse_run(body.clone()), body, "body {body}");
        }
    }

    #[test]
    fn parse_logs_page_finds_entries_under_each_key_in_order() {
        let cases = [
            (json!({"logs": [1], "items": [2]}), json!([1])),
            (json!({"items": [2], "data": [3]}), json!([2])),
            (json!({"data": [3], "entries": [4]}), json!([3])),
            (json!({"entries": [4]}), json!([4])),
            // Not an array: the next key is tried.
            (json!({"logs": {"x": 1}, "data": [3]}), json!([3])),
            (json!({"logs": null, "entries": []}), json!([])),
        ];
        for (body, expected) in cases {
            assert_eq!(
                Value::Array(page(body.clone()).entries),
                expected,
                "body {body}"
            );
        }
    }

    #[test]
    fn parse_logs_page_takes_the_first_cursor_key_in_order() {
        let cases = [
            (
                json!({"logs": [], "nextCursor": "a", "nextBeforeLogCursor": "b"}),
                Some("a"),
            ),
            (
                json!({"logs": [], "nextBeforeLogCursor": "b", "beforeLogCursor": "c"}),
                Some("b"),
            ),
            (
                json!({"logs": [], "beforeLogCursor": "c", "cursor": "d"}),
                Some("c"),
            ),
            (
                json!({"logs": [], "cursor": "d", "pagination": {"nextCursor": "e"}}),
                Some("d"),
            ),
            (
                json!({"logs": [], "pagination": {"nextCursor": "e"}}),
                Some("e"),
            ),
            // Non-strings and empty strings are skipped.
            (
                json!({"logs": [], "nextCursor": null, "cursor": "d"}),
                Some("d"),
            ),
            (
                json!({"logs": [], "nextCursor": 7, "beforeLogCursor": "c"}),
                Some("c"),
            ),
            (json!({"logs": [], "nextCursor": ""}), None),
            (json!({"logs": [], "pagination": "e"}), None),
            (json!({"logs": []}), None),
        ];
        for (body, expected) in cases {
            assert_eq!(
                page(body.clone()).next_cursor.as_deref(),
                expected,
                "body {body}"
            );
        }
    }

    #[test]
    fn parse_logs_page_falls_back_to_the_oldest_entry_when_has_more() {
        let cases = [
            (
                json!({"logs": [{"cursor": "c1", "id": "i1"}, {"cursor": "c2"}], "hasMore": true}),
                Some("c1"),
            ),
            (
                json!({"logs": [{"id": "i1"}, {"id": "i2"}], "hasMore": true}),
                Some("i1"),
            ),
            (
                json!({"logs": [{"id": 41}, {"id": 42}], "hasMore": true}),
                Some("41"),
            ),
            (json!({"logs": [{"cursor": 9}], "hasMore": true}), Some("9")),
            (
                json!({"logs": [{"cursor": null, "id": "i1"}], "hasMore": true}),
                Some("i1"),
            ),
            (json!({"logs": [{"msg": "no id"}], "hasMore": true}), None),
            (json!({"logs": [], "hasMore": true}), None),
            (json!({"logs": [{"id": "i1"}], "hasMore": false}), None),
            (json!({"logs": [{"id": "i1"}], "hasMore": "true"}), None),
            (json!({"logs": [{"id": "i1"}]}), None),
            // An explicit cursor wins over the fallback.
            (
                json!({"logs": [{"id": "i1"}], "hasMore": true, "nextCursor": "n"}),
                Some("n"),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                page(body.clone()).next_cursor.as_deref(),
                expected,
                "body {body}"
            );
        }
    }

    #[test]
    fn parse_logs_page_accepts_a_bare_array_without_cursor() {
        assert_eq!(
            page(json!([{"id": 1}, {"id": 2}])),
            LogsPage {
                entries: vec![json!({"id": 1}), json!({"id": 2})],
                next_cursor: None
            }
        );
    }

    #[test]
    fn parse_logs_page_reads_an_object_without_entries_as_an_empty_page() {
        for body in [
            json!({}),
            json!({"nextCursor": "x", "hasMore": true}),
            json!({"logs": "nope"}),
        ] {
            assert_eq!(page(body.clone()), LogsPage::default(), "body {body}");
        }
    }

    #[test]
    fn parse_logs_page_rejects_scalars_as_retryable_invalid_body() {
        for body in [json!(null), json!("logs"), json!(3), json!(true)] {
            let err = parse_logs_page(&body).expect_err("a scalar is not a page");
            assert_eq!(err.class(), ErrorClass::Retry, "body {body}");
            assert_eq!(err.code(), "INVALID_BODY", "body {body}");
        }
    }

    #[test]
    fn parse_retry_after_reads_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let ago_90s = httpdate::fmt_http_date(now - Duration::from_secs(90));
        let cases: [(&str, Option<Duration>); 9] = [
            ("2", Some(Duration::from_secs(2))),
            (" 120 ", Some(Duration::from_secs(120))),
            ("0", Some(Duration::ZERO)),
            (&in_90s, Some(Duration::from_secs(90))),
            (&ago_90s, Some(Duration::ZERO)),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
            ("99999999999999999999999", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_retry_after(value, now), expected, "value {value:?}");
        }
        assert_eq!(parse_retry_after("", now), None);
    }

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

    /// Arbitrary JSON, with the keys the parser looks for made likely.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        let key = prop_oneof![
            Just("logs".to_owned()),
            Just("items".to_owned()),
            Just("data".to_owned()),
            Just("entries".to_owned()),
            Just("nextCursor".to_owned()),
            Just("nextBeforeLogCursor".to_owned()),
            Just("beforeLogCursor".to_owned()),
            Just("cursor".to_owned()),
            Just("pagination".to_owned()),
            Just("hasMore".to_owned()),
            Just("id".to_owned()),
            Just("run".to_owned()),
            "[a-zA-Z]{1,8}",
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_logs_page_never_panics_and_errs_only_on_scalars(body in arb_json()) {
            let result = parse_logs_page(&body);
            prop_assert_eq!(result.is_err(), !(body.is_object() || body.is_array()));
            if let Ok(page) = result {
                prop_assert!(page.next_cursor.is_none_or(|c| !c.is_empty()));
            }
        }

        #[test]
        fn parse_run_never_panics(body in arb_json()) {
            let _ = parse_run(body);
        }

        #[test]
        fn parse_retry_after_never_panics(value in ".{0,40}", secs in 0u64..4_000_000_000) {
            let _ = parse_retry_after(&value, UNIX_EPOCH + Duration::from_secs(secs));
        }

        #[test]
        fn parse_retry_after_reads_any_delta_seconds(n in any::<u64>()) {
            prop_assert_eq!(parse_retry_after(&n.to_string(), UNIX_EPOCH), Some(Duration::from_secs(n)));
        }

        #[test]
        fn parse_error_body_never_panics_and_stays_bounded(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            let parsed = parse_error_body(&body, &Secret::new("osk_x"));
            for text in [parsed.message, parsed.excerpt].into_iter().flatten() {
                prop_assert!(text.len() <= MAX_EXCERPT_BYTES + '…'.len_utf8());
            }
        }
    }
}
