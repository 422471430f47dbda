//! The probe `steerhook doctor` sends: a request for a run that cannot
//! exist, whose answer tells whether the API is there and takes the key.

use std::time::{Duration, Instant, SystemTime};

use super::error::parse_error_body;
use super::{OpensteerClient, OpensteerError};

/// The run id the probe asks for. It cannot exist, so the answers tell the
/// cases apart: Opensteer's JSON error with 404 (the key was accepted and
/// the route is there), 401 `CLOUD_AUTH_FAILED` (the key was refused), or
/// something else (another server: the base URL is wrong).
pub const PROBE_RUN_ID: &str = "steerhook-doctor-probe";

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
    /// The API's error message, or an excerpt of a body that was not an
    /// Opensteer error (bounded, the key redacted); `None` for an empty body.
    pub message: Option<String>,
    /// How long the request took; the skew check should allow for it.
    pub round_trip: Duration,
}

/// The verdict of the probe on the API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// 404 with an Opensteer error document (`{"error": .., "code": ..}`):
    /// the probe run does not exist, and we were allowed to ask.
    Accepted,
    /// 401/403 or `CLOUD_AUTH_FAILED`.
    Rejected,
    /// Another Opensteer error (429, 5xx...): the API is there, but the
    /// answer says nothing about the key.
    Unknown,
    /// An answer that is not Opensteer's: no error document (an empty 404
    /// from any web server), a redirect, or success for a run that cannot
    /// exist. `opensteer.base_url` most likely names another server.
    NotOpensteer,
}

impl OpensteerClient {
    /// `GET {base}/runs/steerhook-doctor-probe`: reachability, the key's
    /// verdict and the server's `Date`. Any HTTP answer is `Ok`; only a
    /// transport failure (timeout, refused, TLS) is `Err`.
    ///
    /// The probe run cannot exist, so only Opensteer's own "not found" error
    /// proves the key: an empty 404, which any web server answers for any
    /// path, proves nothing and means the base URL is most likely wrong.
    #[tracing::instrument(skip_all)]
    pub async fn probe(&self) -> Result<ProbeResult, OpensteerError> {
        let url = self.run_url(PROBE_RUN_ID, false)?;
        let started = Instant::now();
        let response = self.send(url).await?;
        let round_trip = started.elapsed();
        let parsed = parse_error_body(&response.body, &self.inner.api_key);
        let opensteer_error = parsed.code.is_some() || parsed.message.is_some();
        let status = response.status.as_u16();
        let key =
            if parsed.code.as_deref() == Some("CLOUD_AUTH_FAILED") || matches!(status, 401 | 403) {
                KeyCheck::Rejected
            } else if response.status.is_success() || !opensteer_error {
                KeyCheck::NotOpensteer
            } else if status == 404 {
                KeyCheck::Accepted
            } else {
                KeyCheck::Unknown
            };
        Ok(ProbeResult {
            status,
            server_date: response.date,
            key,
            code: parsed.code,
            message: parsed.message.or(parsed.excerpt),
            round_trip,
        })
    }
}
