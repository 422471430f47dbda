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

mod error;
mod probe;
mod read;
mod timestamp;

use error::{bound_text, parse_error_body};
pub use error::{
    is_known_code, ApiError, ErrorClass, OpensteerError, API_ERROR_CODES, CLIENT_ERROR_CODES,
    MAX_EXCERPT_BYTES,
};
pub use probe::{KeyCheck, ProbeResult, PROBE_RUN_ID};
pub use read::{
    parse_logs_page, parse_retry_after, parse_run, read_logs_page, LogsPage, RawLogEntry,
    RawLogsPage, RunResponse,
};
pub use timestamp::{rfc3339_us, timestamp_us, SECONDS_BELOW, TIMESTAMP_KEYS};

/// The largest response body read from the API, in bytes; a larger body is a
/// `BODY_TOO_LARGE` error, not retried (asking again gets the same body):
/// log paging stops there and hooks are told their logs are partial.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How much of an error response body is read, in bytes: enough for any
/// `{"error","code","details"}` document, small enough to not matter.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The header carrying the API key.
const API_KEY_HEADER: &str = "x-api-key";

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

impl OpensteerClient {
    /// A client for `settings`, reading the system clock.
    pub fn new(settings: ClientSettings) -> Result<Self, OpensteerError> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// Checks settings without building a client: `Err((key, what is
    /// wrong))`. The configuration calls this when it loads, so a file
    /// `check-config` accepts also makes a client.
    pub fn check_settings(settings: &ClientSettings) -> Result<(), (&'static str, String)> {
        Self::parse_settings(settings).map(|_| ())
    }

    /// The base URL and the key header, or the key that is wrong and why.
    fn parse_settings(
        settings: &ClientSettings,
    ) -> Result<(Url, HeaderValue), (&'static str, String)> {
        const URL_KEY: &str = "opensteer.base_url";
        let invalid = |key: &'static str, m: &str| Err((key, m.to_owned()));
        let base = Url::parse(settings.base_url.trim()).map_err(|e| {
            (
                URL_KEY,
                format!("{:?} is not a URL: {e}", settings.base_url),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return invalid(URL_KEY, "must start with https:// (or http://)");
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return invalid(URL_KEY, "must name a host, e.g. https://api.opensteer.com");
        }
        if !base.username().is_empty() || base.password().is_some() {
            return invalid(
                URL_KEY,
                "must not contain credentials; the key goes in opensteer.api_key",
            );
        }
        if base.query().is_some() || base.fragment().is_some() {
            return invalid(URL_KEY, "must not have a query or fragment");
        }
        if settings.api_key.expose().is_empty() {
            return invalid("opensteer.api_key", "is empty");
        }
        // The error of from_str would not print the value, but say nothing of it anyway.
        let mut key = HeaderValue::from_str(settings.api_key.expose()).map_err(|_| {
            (
                "opensteer.api_key",
                "contains characters that cannot be sent in an HTTP header (a stray newline?)"
                    .to_owned(),
            )
        })?;
        key.set_sensitive(true);
        if settings.log_page_size == 0 {
            return invalid("opensteer.log_page_size", "must be at least 1");
        }
        if settings.max_concurrent_requests == 0
            || settings.max_concurrent_requests > Semaphore::MAX_PERMITS
        {
            return invalid(
                "opensteer.max_concurrent_requests",
                "the request concurrency must be at least 1",
            );
        }
        if settings.connect_timeout.is_zero() {
            return invalid("opensteer.connect_timeout_secs", "must be longer than zero");
        }
        if settings.request_timeout.is_zero() {
            return invalid("opensteer.request_timeout_secs", "must be longer than zero");
        }
        Ok((base, key))
    }

    /// A client whose "now" (for `Retry-After` dates) comes from `clock`.
    pub fn with_clock(
        settings: ClientSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpensteerError> {
        let (base, key) = Self::parse_settings(&settings).map_err(|(key, message)| {
            OpensteerError::InvalidSettings(format!("{key} {message}"))
        })?;

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
    /// read per [`read_logs_page`] (its entries kept as the text the API
    /// sent). `before_cursor` is the `next_cursor` of the previous (newer)
    /// page; `None` asks for the newest page.
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn fetch_logs_page(
        &self,
        run_id: &str,
        before_cursor: Option<&str>,
    ) -> Result<RawLogsPage, OpensteerError> {
        let mut url = self.run_url(run_id, true)?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("logLimit", &self.inner.log_page_size.to_string());
            if let Some(cursor) = before_cursor {
                query.append_pair("beforeLogCursor", cursor);
            }
        }
        let (request, body) = self.get_success(url).await?;
        let text =
            String::from_utf8(body).map_err(|e| OpensteerError::invalid_body(&request, e))?;
        read_logs_page(text).map_err(|e| match e {
            OpensteerError::InvalidBody { reason, code, .. } => OpensteerError::InvalidBody {
                request,
                reason,
                code,
            },
            other => other,
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
