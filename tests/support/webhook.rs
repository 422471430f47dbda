//! Sending webhooks as Opensteer does, and reading the answers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use steerhook::clock::{Clock, SystemClock};
use steerhook::signature::{sign, SIGNATURE_HEADER};

use super::SECRET;

/// Posts to one webhook URL, signing with one secret at one clock; cheap to
/// clone into concurrent tasks.
#[derive(Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: String,
    clock: Arc<dyn Clock>,
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    /// The body.
    pub text: String,
}

impl Answer {
    /// The body as JSON; panics with the text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

/// An HTTP client with a timeout, so a hang fails the test.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

impl Webhook {
    /// Posts to `url` signed with [`SECRET`] at the system clock (for the
    /// real binary).
    pub fn to(url: &str) -> Webhook {
        Webhook::new(url, SECRET, Arc::new(SystemClock))
    }

    /// Posts to `url` signed with `secret` at `clock`.
    pub fn new(url: &str, secret: &str, clock: Arc<dyn Clock>) -> Webhook {
        Webhook {
            client: http_client(),
            url: url.to_owned(),
            secret: secret.to_owned(),
            clock,
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The signature header for `body` at the clock's current time.
    pub fn signature(&self, body: &[u8]) -> String {
        let t = self
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        sign(&self.secret, t, body)
    }

    /// POSTs `body` with the signature header's raw bytes `header` (absent
    /// when None; HTTP allows octets from 0x80 up in a header value).
    pub async fn send(
        &self,
        body: &[u8],
        header: Option<&[u8]>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(h) = header {
            let value = reqwest::header::HeaderValue::from_bytes(h)
                .unwrap_or_else(|e| panic!("{h:?} cannot be sent as a header value: {e}"));
            req = req.header(SIGNATURE_HEADER, value);
        }
        req.send().await
    }

    /// POSTs `body` signed now; panics when nothing answers.
    pub async fn post_signed(&self, body: impl AsRef<[u8]>) -> reqwest::Response {
        let body = body.as_ref();
        let header = self.signature(body);
        self.send(body, Some(header.as_bytes()))
            .await
            .expect("the webhook request is answered")
    }

    /// POSTs `body` signed now; `None` when the connection failed.
    pub async fn try_post_signed(&self, body: impl AsRef<[u8]>) -> Option<Answer> {
        let body = body.as_ref();
        let header = self.signature(body);
        let resp = self.send(body, Some(header.as_bytes())).await.ok()?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.ok()?;
        Some(Answer {
            status,
            retry_after,
            text,
        })
    }

    /// POSTs `body` signed now and asserts 202; returns the event id.
    pub async fn post_accepted(&self, body: impl AsRef<[u8]>) -> String {
        let answer = self
            .try_post_signed(body)
            .await
            .expect("the webhook request is answered");
        assert_eq!(answer.status, 202, "webhook answer: {}", answer.text);
        answer.json()["id"]
            .as_str()
            .expect("id in the answer")
            .to_owned()
    }

    /// POSTs a signed `run.succeeded` for `run_id` (event id `evt_<run_id>`)
    /// and asserts 202; returns the event id.
    pub async fn post_run(&self, run_id: &str) -> String {
        self.post_accepted(run_event("run.succeeded", &format!("evt_{run_id}"), run_id))
            .await
    }
}

/// A `run.*` event body the app accepts: `data.run` with the run's id and
/// the status the type says.
pub fn run_event(event_type: &str, event_id: &str, run_id: &str) -> Vec<u8> {
    let status = if event_type == "run.failed" {
        "failed"
    } else {
        "succeeded"
    };
    serde_json::to_vec(&serde_json::json!({
        "id": event_id,
        "type": event_type,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "data": {"run": {"id": run_id, "status": status, "scraperId": "scr_1"}}
    }))
    .expect("json")
}

/// A unique id with `prefix`, so tests never share a run id.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Reads the JSON body; panics with the text when it is not JSON.
pub async fn json_body(resp: reqwest::Response) -> Value {
    let text = resp.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Asserts the SPEC §4 error shape `{"error": "<message>", "code": CODE}`
/// with `status`, and returns the body.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status for {code}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?} for {code}"
    );
    let body = json_body(resp).await;
    let obj = body.as_object().expect("the error body is an object");
    assert_eq!(obj.len(), 2, "exactly error and code: {body}");
    assert_eq!(obj["code"], code, "{body}");
    let message = obj["error"].as_str().expect("error is a string");
    assert!(!message.is_empty(), "an empty error message: {body}");
    body
}
