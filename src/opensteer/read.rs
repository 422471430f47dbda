//! The tolerant readers of SPEC §5: the run object, a logs page, and
//! `Retry-After`. The API's shapes are not published, so each looks in
//! several places and keeps what it does not understand.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::OpensteerError;

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
pub(super) fn parse_logs_page_owned(body: Value) -> Result<LogsPage, OpensteerError> {
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
    use crate::opensteer::ErrorClass;
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
    }
}
