//! The HTTP hook: one POST per event to an orchestrator (Airflow's REST API,
//! a Prefect or n8n webhook, an internal service), signed with the Standard
//! Webhooks scheme so the receiver can check it with any of its libraries.
//!
//! The body is the hook document of SPEC §6 streamed from the attempt's
//! payload file (never held in memory), or only its `run`; `body_key` wraps
//! either in a one-key object for APIs that want it under a name (Airflow's
//! `{"conf": ...}`). Nothing else is templated.
//!
//! What an answer means:
//! - 2xx: delivered;
//! - 408, 429, 5xx, no connection, no answer in time: retried with backoff,
//!   after the `Retry-After` of a 429 or 503 when there is one;
//! - 3xx: failed at once, redirects are not followed (set `url` to the
//!   final address); other 4xx: failed at once, a wrong URL or token will
//!   not fix itself.
//!
//! Bounded: `timeout_secs` covers the whole attempt (signing, connecting,
//! sending, the answer); only the first [`MAX_ANSWER_BYTES`] of an answer
//! are read, kept with the status line as the attempt's output.

mod answer;
mod settings;
mod sign;

use std::io::{Read, Seek};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt as _;
use reqwest::header::{HeaderName, HeaderValue};
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;

use super::{Delivery, FailureKind, Sink, SinkFailure, SinkOutcome};
pub use answer::MAX_ANSWER_BYTES;
pub use settings::{
    bearer_header, parse_headers, BodyShape, HookUrl, HttpHookSettings, DEFAULT_TIMEOUT_SECS,
    MAX_BODY_KEY_BYTES, MAX_HEADERS, MAX_HEADER_VALUE_BYTES, MAX_URL_BYTES,
};
pub use sign::{webhook_id, Signer, SigningKey, SECRET_PREFIX};

/// Longest `doctor` waits for the URL to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Time past `timeout_secs` for an attempt to wind down (a blocking read
/// of the payload file ends on its own).
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// Bytes of the payload file read at once while signing and sending.
const CHUNK_BYTES: usize = 64 * 1024;

/// Why an HTTP sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// The bearer token cannot be a header (the configuration checks this first).
    #[error("hook {0}: bearer_token {1}")]
    Token(String, String),
    /// The HTTP client could not be built (its TLS setup).
    #[error("hook {0}: cannot build the HTTP client: {1}")]
    Client(String, reqwest::Error),
}

/// An HTTP hook as a [`Sink`].
#[derive(Debug)]
pub struct HttpSink {
    name: String,
    settings: HttpHookSettings,
    authorization: Option<HeaderValue>,
    client: reqwest::Client,
}

/// The body of one request: `prefix`, the document or the run, `suffix`.
struct PreparedBody {
    prefix: Bytes,
    middle: Middle,
    suffix: Bytes,
    len: u64,
    /// `webhook-timestamp`, unix seconds.
    timestamp: i64,
    /// `webhook-signature`, when the hook has a secret.
    signature: Option<String>,
}

enum Middle {
    /// The payload file, positioned at its start, and how much of it to send.
    File(std::fs::File, u64),
    /// The run, already in memory.
    Bytes(Bytes),
}

impl HttpSink {
    /// A sink for hook `name`; builds its HTTP client (no connection yet).
    pub fn new(name: String, settings: HttpHookSettings) -> Result<Self, HttpSetupError> {
        let authorization = settings
            .bearer_token
            .as_ref()
            .map(bearer_header)
            .transpose()
            .map_err(|m| HttpSetupError::Token(name.clone(), m))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("steerhook/", env!("CARGO_PKG_VERSION")))
            // A redirect would send the signed event (and the token) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| HttpSetupError::Client(name.clone(), e))?;
        Ok(Self {
            name,
            settings,
            authorization,
            client,
        })
    }

    async fn send(&self, d: Delivery<'_>) -> SinkOutcome {
        let deadline = Instant::now() + self.settings.timeout;
        let cancel = d.cancel.clone();
        tokio::select! {
            biased;
            () = cancel.cancelled() => answer::failed(SinkFailure::new(
                FailureKind::Interrupted,
                "INTERRUPTED",
                format!("the daemon stopped while POSTing to {}; it is sent again on the next start", self.settings.url),
            )),
            outcome = self.attempt(&d, deadline) => outcome,
        }
    }

    #[tracing::instrument(skip_all, fields(hook = %self.name, url = %self.settings.url))]
    async fn attempt(&self, d: &Delivery<'_>, deadline: Instant) -> SinkOutcome {
        let started = Instant::now();
        let id = webhook_id(&d.document.event.id, d.hook);
        let sent = tokio::time::timeout_at(deadline, async {
            let body = self.prepare(d, &id).await.map_err(|e| {
                SinkFailure::new(
                    FailureKind::Retryable,
                    "PAYLOAD_FILE",
                    format!("cannot read the payload file {}: {e}", d.payload.display()),
                )
            })?;
            let request = self.request(&id, body);
            self.client
                .execute(request)
                .await
                .map_err(|e| answer::transport_failure(e, &self.settings.url))
        })
        .await;
        let response = match sent {
            Err(_elapsed) => {
                return answer::failed(SinkFailure::new(
                    FailureKind::Retryable,
                    "TIMEOUT",
                    format!(
                        "{} did not answer within {} s (timeout_secs)",
                        self.settings.url,
                        self.settings.timeout.as_secs()
                    ),
                ))
            }
            Ok(Err(failure)) => return answer::failed(failure),
            Ok(Ok(response)) => response,
        };
        let answer = answer::read(response, deadline).await;
        tracing::debug!(
            status = answer.status.as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            "HTTP hook answered"
        );
        answer.outcome(&self.settings.url)
    }

    /// Reads (and signs) the body: the payload file is hashed in chunks on a
    /// blocking thread, then sent from its start.
    async fn prepare(&self, d: &Delivery<'_>, id: &str) -> std::io::Result<PreparedBody> {
        let (prefix, suffix) = match &self.settings.body_key {
            // The key is written as JSON, so any text is a valid key.
            Some(key) => (
                Bytes::from(format!("{{{}:", serde_json::Value::from(key.as_str()))),
                Bytes::from_static(b"}"),
            ),
            None => (Bytes::new(), Bytes::new()),
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut signer = self
            .settings
            .signing_key
            .as_ref()
            .map(|key| Signer::new(key, id, timestamp));
        if let Some(s) = signer.as_mut() {
            s.update(&prefix);
        }
        let (middle, middle_len, signer) = match self.settings.body {
            BodyShape::Run => {
                let run = Bytes::from(
                    d.document
                        .run
                        .as_deref()
                        .map_or("null", |r| r.get())
                        .to_owned(),
                );
                if let Some(s) = signer.as_mut() {
                    s.update(&run);
                }
                let len = run.len() as u64;
                (Middle::Bytes(run), len, signer)
            }
            BodyShape::Document => {
                let path = d.payload.to_owned();
                let (file, len, signer) =
                    tokio::task::spawn_blocking(move || hash_file(&path, signer))
                        .await
                        .map_err(std::io::Error::other)??;
                (Middle::File(file, len), len, signer)
            }
        };
        let signature = signer.map(|mut s| {
            s.update(&suffix);
            s.finish()
        });
        let len = prefix.len() as u64 + middle_len + suffix.len() as u64;
        Ok(PreparedBody {
            prefix,
            middle,
            suffix,
            len,
            timestamp,
            signature,
        })
    }

    fn request(&self, id: &str, body: PreparedBody) -> reqwest::Request {
        use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
        let mut headers = self.settings.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Known up front, so the body goes with a Content-Length (not chunked),
        // which every receiver reads.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len));
        if let Some(auth) = &self.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        // The id and time go along unsigned too: a receiver can drop a
        // message it already took by its id alone.
        let signature = body
            .signature
            .iter()
            .map(|s| ("webhook-signature", s.clone()));
        for (name, value) in [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", body.timestamp.to_string()),
        ]
        .into_iter()
        .chain(signature)
        {
            // Hex digits, a number, `v1,` and base64: always a valid value.
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        let stream =
            futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(body.prefix)));
        let middle = match body.middle {
            Middle::Bytes(bytes) => {
                futures_util::stream::once(std::future::ready(Ok(bytes))).boxed()
            }
            Middle::File(file, len) => tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file).take(len),
                CHUNK_BYTES,
            )
            .boxed(),
        };
        let stream = stream
            .chain(middle)
            .chain(futures_util::stream::once(std::future::ready(Ok(
                body.suffix
            ))))
            .filter(|chunk| std::future::ready(chunk.as_ref().map_or(true, |c| !c.is_empty())));
        let mut request =
            reqwest::Request::new(reqwest::Method::POST, self.settings.url.url().clone());
        *request.headers_mut() = headers;
        *request.body_mut() = Some(reqwest::Body::wrap_stream(stream));
        request
    }

    async fn probe(&self) -> Result<String, String> {
        let url = self.settings.url.url();
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let wait = self.settings.timeout.min(CHECK_TIMEOUT);
        let addrs = match tokio::time::timeout(wait, tokio::net::lookup_host((host.as_str(), port)))
            .await
        {
            Err(_) => {
                return Err(format!(
                    "resolving {host} took longer than {} s",
                    wait.as_secs()
                ))
            }
            Ok(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
            Ok(Ok(addrs)) => addrs.count(),
        };
        // HEAD sends no event; the token and headers go along so that a
        // gateway that wants them lets the probe through.
        let mut request = self
            .client
            .head(url.clone())
            .headers(self.settings.headers.clone());
        if let Some(auth) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let resolved = format!("{} resolves ({addrs} address(es))", self.settings.url);
        match tokio::time::timeout(wait, request.send()).await {
            Err(_) => Err(format!(
                "{resolved} but did not answer HEAD within {} s",
                wait.as_secs()
            )),
            Ok(Err(e)) => Err(format!(
                "{resolved} but does not answer: {}",
                answer::error_chain(e)
            )),
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_redirection() {
                    let to = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map_or(String::new(), |l| {
                            format!(" to {}", answer::printable(l, 200))
                        });
                    return Err(format!(
                        "{resolved} and redirects (HTTP {status}){to}; redirects are not followed: set url to the final address"
                    ));
                }
                let hint = match status.as_u16() {
                    401 | 403 => "; if deliveries fail with this status too, check bearer_token",
                    404 | 405 => "; a receiver may refuse HEAD and still take the POST",
                    _ => "",
                };
                Ok(format!(
                    "{resolved} and answers HEAD with HTTP {status} (no event sent){hint}"
                ))
            }
        }
    }
}

/// Opens `path`, feeds it to `signer` in chunks, and returns it rewound
/// with its length: what is sent is exactly what was signed.
fn hash_file(
    path: &Path,
    mut signer: Option<Signer>,
) -> std::io::Result<(std::fs::File, u64, Option<Signer>)> {
    let mut file = std::fs::File::open(path)?;
    let len = match signer.as_mut() {
        None => file.metadata()?.len(),
        Some(signer) => {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let mut len = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                signer.update(&buf[..n]);
                len += n as u64;
            }
            file.rewind()?;
            len
        }
    };
    Ok((file, len, signer))
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, SinkOutcome> {
        Box::pin(self.send(delivery))
    }

    fn max_attempt_duration(&self) -> Duration {
        self.settings.timeout + STOP_MARGIN
    }

    fn check(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(self.probe())
    }
}
