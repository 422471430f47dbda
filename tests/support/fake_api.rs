//! The Opensteer API faked on a real socket (wiremock): runs and their log
//! pages, paged as the real API pages them (SPEC §5), in every shape the
//! tolerant readers accept; API errors; what the fake received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Where a logs page puts its entries and its next cursor (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorAt {
    /// A top-level string key.
    Key(&'static str),
    /// `pagination.nextCursor`.
    Pagination,
    /// No cursor key: `hasMore: true`, and the oldest entry carries `id`.
    HasMoreId,
    /// No cursor key: `hasMore: true`, and the oldest entry carries `cursor`.
    HasMoreEntryCursor,
}

/// The shape of the fake's answers.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// `GET /runs/{id}` wraps the run as `{"run": {...}}`.
    pub wrapped_run: bool,
    /// The key of the entries array.
    pub entries_key: &'static str,
    /// Where the next cursor is.
    pub cursor: CursorAt,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            wrapped_run: false,
            entries_key: "logs",
            cursor: CursorAt::Key("nextCursor"),
        }
    }
}

/// The run object the fake serves for `run_id`.
pub fn run_json(run_id: &str) -> Value {
    json!({"id": run_id, "status": "succeeded", "scraper": "shop-prices"})
}

/// Log line `i` of a run, in the shape's form.
pub fn log_line(i: usize, shape: &Shape) -> Value {
    let mut e = json!({"id": format!("line-{i}"), "seq": i, "message": format!("line {i}")});
    if shape.cursor == CursorAt::HasMoreEntryCursor {
        e["cursor"] = json!(format!("entry-cursor:{i}"));
    }
    e
}

/// The index an opaque cursor stands for: entries before it are older.
fn cursor_index(cursor: &str) -> Option<usize> {
    cursor
        .rsplit([':', '-'])
        .next()
        .and_then(|n| n.parse().ok())
}

/// A logs page of `total` lines, paging backwards from `before` (exclusive).
pub fn logs_page(total: usize, limit: usize, before: usize, shape: &Shape) -> Value {
    let end = before.min(total);
    let start = end.saturating_sub(limit);
    let entries: Vec<Value> = (start..end).map(|i| log_line(i, shape)).collect();
    let more = start > 0;
    let mut page = json!({});
    page[shape.entries_key] = Value::Array(entries);
    let cursor = format!("before:{start}");
    match shape.cursor {
        CursorAt::Key(k) if more => page[k] = json!(cursor),
        CursorAt::Pagination if more => page["pagination"] = json!({"nextCursor": cursor}),
        CursorAt::HasMoreId | CursorAt::HasMoreEntryCursor => page["hasMore"] = json!(more),
        _ => {}
    }
    page
}

/// Serves every run: `GET /runs/{id}` and its `total` log lines, paged as
/// the real API does (newest page first, entries oldest first within a page).
#[derive(Clone)]
pub struct FakeRuns {
    pub total: usize,
    pub shape: Shape,
}

impl FakeRuns {
    /// Every run with `total` log lines, in the default shape.
    pub fn lines(total: usize) -> Self {
        Self {
            total,
            shape: Shape::default(),
        }
    }
}

impl Respond for FakeRuns {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        serve_run(request, self.total, &self.shape)
    }
}

/// The answer of the healthy fake to `request`.
pub fn serve_run(request: &Request, total: usize, shape: &Shape) -> ResponseTemplate {
    let segments: Vec<&str> = request.url.path().trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["runs", run_id] => {
            let run = run_json(run_id);
            let body = if shape.wrapped_run {
                json!({"run": run, "requestId": "req_1"})
            } else {
                run
            };
            ResponseTemplate::new(200).set_body_json(body)
        }
        ["runs", _, "logs"] => {
            let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
            let limit = q
                .get("logLimit")
                .and_then(|l| l.parse().ok())
                .expect("logLimit is sent");
            let before = match q.get("beforeLogCursor") {
                None => total,
                Some(c) => cursor_index(c).unwrap_or_else(|| panic!("unknown cursor {c:?}")),
            };
            ResponseTemplate::new(200).set_body_json(logs_page(total, limit, before, shape))
        }
        _ => ResponseTemplate::new(404),
    }
}

/// Mounts `responder` for every `GET /runs/...`.
pub async fn mount_runs(server: &MockServer, responder: impl Respond + 'static) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/runs/"))
        .respond_with(responder)
        .mount(server)
        .await;
}

/// An API error answer (SPEC §1's error shape), saying `fake <code>`.
pub fn api_error(status: u16, code: &str) -> ResponseTemplate {
    api_error_saying(status, code, &format!("fake {code}"))
}

/// An API error answer with `message`.
pub fn api_error_saying(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": message, "code": code, "details": {}}))
}

/// Records when each request arrives, then lets `answer` respond, `delay`
/// later: how many requests the API had in flight at once is then
/// [`most_in_flight`] of the arrivals.
pub struct Arrivals<R> {
    /// When each request arrived.
    pub at: Arc<Mutex<Vec<Instant>>>,
    /// How long every answer takes.
    pub delay: Duration,
    /// The answer.
    pub answer: R,
}

impl<R: Respond> Respond for Arrivals<R> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        // wiremock calls this when a request arrives and applies the delay after.
        self.at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        self.answer.respond(request).set_delay(self.delay)
    }
}

/// The most requests that arrived within `window` of one another: with
/// answers that take longer than `window`, the most in flight at once.
pub fn most_in_flight(arrivals: &[Instant], window: Duration) -> usize {
    arrivals
        .iter()
        .map(|a| {
            arrivals
                .iter()
                .filter(|b| **b >= *a && **b - *a < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Requests the fake received for paths starting with `prefix`.
pub async fn requests_to(server: &MockServer, prefix: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with(prefix))
        .collect()
}

/// The `seq` field of each log entry the hook received.
pub fn log_seqs(doc: &Value) -> Vec<u64> {
    doc["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("the hook got no logs: {doc}"))
        .iter()
        .map(|e| e["seq"].as_u64().expect("an entry with seq"))
        .collect()
}
