//! What the receiver answered, read up to a bound, and what it means for
//! the delivery.

use std::time::{Duration, SystemTime};

use reqwest::header::{LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Version};
use tokio::time::Instant;

use super::HookUrl;
use crate::hooks::{FailureKind, SinkFailure, SinkOutcome};

/// Bytes of an answer's body kept as the attempt's output; the rest is
/// never read (the connection is closed).
pub const MAX_ANSWER_BYTES: usize = 1024;
/// Characters of the answer quoted in a failure's message.
const MAX_EXCERPT_CHARS: usize = 200;

/// An answer, its body cut at [`MAX_ANSWER_BYTES`].
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    version: Version,
    retry_after: Option<Duration>,
    location: Option<String>,
    body: Vec<u8>,
    /// More followed (or may have) than was kept.
    cut: bool,
    /// The body stopped before its end: why.
    ended_early: Option<String>,
}

/// Reads the status, the headers that matter and the first
/// [`MAX_ANSWER_BYTES`] of the body of `response`, until `deadline`. Dropping
/// the response then closes the connection, however much was announced.
pub(super) async fn read(mut response: reqwest::Response, deadline: Instant) -> Answer {
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header(RETRY_AFTER)
        .and_then(|v| crate::opensteer::parse_retry_after(&v, SystemTime::now()));
    let location = header(LOCATION).map(|l| printable(&l, MAX_EXCERPT_CHARS));
    let announced = response.content_length();
    let mut body = Vec::with_capacity(MAX_ANSWER_BYTES.min(announced.unwrap_or(0) as usize));
    let mut cut = false;
    let mut ended_early = None;
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => {
                ended_early = Some("the rest did not arrive within timeout_secs".to_owned());
                break;
            }
            Ok(Err(e)) => {
                ended_early = Some(error_chain(e));
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => {
                let room = MAX_ANSWER_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() == MAX_ANSWER_BYTES {
                    // Unless the length says this was all, assume more.
                    cut = chunk.len() > room || announced != Some(MAX_ANSWER_BYTES as u64);
                    break;
                }
            }
        }
    }
    Answer {
        status,
        version: response.version(),
        retry_after,
        location,
        body,
        cut,
        ended_early,
    }
}

impl Answer {
    /// The attempt's outcome: its result by the status, and as output the
    /// status line and the kept body.
    pub(super) fn outcome(self, url: &HookUrl) -> SinkOutcome {
        let result = self.result(url);
        let mut output = format!("{:?} {}\n", self.version, self.status).into_bytes();
        output.extend_from_slice(&self.body);
        if self.cut {
            output.extend_from_slice(
                format!("\n[answer cut: only its first {MAX_ANSWER_BYTES} bytes are kept]")
                    .as_bytes(),
            );
        }
        if let Some(why) = &self.ended_early {
            output.extend_from_slice(format!("\n[answer ended early: {why}]").as_bytes());
        }
        SinkOutcome {
            result,
            exit_code: None,
            output: Some(output),
            error_output: None,
        }
    }

    fn result(&self, url: &HookUrl) -> Result<(), SinkFailure> {
        let status = self.status;
        if status.is_success() {
            return Ok(());
        }
        let said = match printable(&String::from_utf8_lossy(&self.body), MAX_EXCERPT_CHARS) {
            excerpt if excerpt.is_empty() => String::new(),
            excerpt => format!(": {excerpt}"),
        };
        let answered = format!("{url} answered HTTP {status}{said}");
        let failure = |kind, code, advice: &str| {
            Err(SinkFailure::new(kind, code, format!("{answered}{advice}")))
        };
        match status.as_u16() {
            300..=399 => {
                let to = self
                    .location
                    .as_deref()
                    .map_or(String::new(), |l| format!(" to {l}"));
                failure(
                    FailureKind::Permanent,
                    "HTTP_REDIRECT",
                    &format!(" (a redirect{to}, not followed: set url to the final address, then `steerhook replay`)"),
                )
            }
            408 => failure(FailureKind::Retryable, "HTTP_REQUEST_TIMEOUT", ""),
            429 | 503 if self.retry_after.is_some() => Err(SinkFailure {
                kind: FailureKind::Retryable,
                code: if status.as_u16() == 429 {
                    "HTTP_RATE_LIMITED"
                } else {
                    "HTTP_SERVER_ERROR"
                },
                message: format!(
                    "{answered} (asked to wait {} s)",
                    self.retry_after.unwrap_or_default().as_secs()
                ),
                retry_after: self.retry_after,
            }),
            429 => failure(FailureKind::Retryable, "HTTP_RATE_LIMITED", ""),
            400..=499 => failure(
                FailureKind::Permanent,
                "HTTP_CLIENT_ERROR",
                " (not retried: check url, bearer_token and headers, then `steerhook replay`)",
            ),
            500..=599 => failure(FailureKind::Retryable, "HTTP_SERVER_ERROR", ""),
            _ => failure(FailureKind::Retryable, "HTTP_UNEXPECTED_STATUS", ""),
        }
    }
}

/// An outcome with no answer to keep.
pub(super) fn failed(failure: SinkFailure) -> SinkOutcome {
    SinkOutcome {
        result: Err(failure),
        exit_code: None,
        output: None,
        error_output: None,
    }
}

/// A request that got no answer: retried, as the receiver may be back later.
pub(super) fn transport_failure(e: reqwest::Error, url: &HookUrl) -> SinkFailure {
    let (code, what) = if e.is_connect() {
        ("CONNECT_FAILED", "cannot connect to")
    } else {
        ("HTTP_TRANSPORT", "no answer from")
    };
    SinkFailure::new(
        FailureKind::Retryable,
        code,
        format!("{what} {url}: {}", error_chain(e)),
    )
}

/// `e` and its causes, without the URL (its query may hold a token).
pub(super) fn error_chain(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // Some causes print their own cause too: say each once.
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// `text` on one line, control characters as spaces, at most `max` characters.
pub(super) fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<u64>, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            version: Version::HTTP_11,
            retry_after: retry_after.map(Duration::from_secs),
            location: (300..400)
                .contains(&status)
                .then(|| "https://elsewhere/".to_owned()),
            body: body.as_bytes().to_vec(),
            cut: false,
            ended_early: None,
        }
    }

    #[test]
    fn statuses_map_to_success_retry_or_failure() {
        let url = HookUrl::parse("https://orchestrator.test/run").unwrap();
        let cases = [
            (200, None, None),
            (204, None, None),
            (301, None, Some((FailureKind::Permanent, "HTTP_REDIRECT"))),
            (
                400,
                None,
                Some((FailureKind::Permanent, "HTTP_CLIENT_ERROR")),
            ),
            (
                404,
                None,
                Some((FailureKind::Permanent, "HTTP_CLIENT_ERROR")),
            ),
            (
                408,
                None,
                Some((FailureKind::Retryable, "HTTP_REQUEST_TIMEOUT")),
            ),
            (
                429,
                None,
                Some((FailureKind::Retryable, "HTTP_RATE_LIMITED")),
            ),
            (
                429,
                Some(2),
                Some((FailureKind::Retryable, "HTTP_RATE_LIMITED")),
            ),
            (
                500,
                None,
                Some((FailureKind::Retryable, "HTTP_SERVER_ERROR")),
            ),
            (
                503,
                Some(7),
                Some((FailureKind::Retryable, "HTTP_SERVER_ERROR")),
            ),
            (
                600,
                None,
                Some((FailureKind::Retryable, "HTTP_UNEXPECTED_STATUS")),
            ),
        ];
        for (status, wait, expected) in cases {
            let result = answer(status, wait, "{\"detail\":\"no\"}").result(&url);
            match (result, expected) {
                (Ok(()), None) => {}
                (Err(f), Some((kind, code))) => {
                    assert_eq!((f.kind, f.code), (kind, code), "HTTP {status}");
                    assert_eq!(
                        f.retry_after,
                        wait.map(Duration::from_secs),
                        "HTTP {status}"
                    );
                    assert!(f.message.contains(&status.to_string()), "{}", f.message);
                    assert!(f.message.contains("{\"detail\":\"no\"}"), "{}", f.message);
                }
                (got, want) => panic!("HTTP {status}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn output_is_the_status_line_then_the_kept_body() {
        let url = HookUrl::parse("https://orchestrator.test/run").unwrap();
        let mut a = answer(404, None, "not here");
        a.cut = true;
        let out = a.outcome(&url).output.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\nnot here\n[answer cut: only its first 1024 bytes are kept]"
        );
    }

    #[test]
    fn printable_keeps_one_bounded_line() {
        assert_eq!(printable("a\nb\u{1b}[2J", 10), "a b [2J");
        assert_eq!(printable(&"x".repeat(300), 5), "xxxxx…");
    }
}
