//! The tolerant readers of SPEC §5: the run object, a logs page, and
//! `Retry-After`. The API's shapes are not published, so each looks in
//! several places and keeps what it does not understand.
//!
//! A logs page is read without building a tree of values: its entries stay
//! slices of the body's text ([`RawLogsPage`]), which is what gets stored,
//! so a page costs about its own size in memory, once.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::timestamp::{timestamp_us, TIMESTAMP_KEYS};
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

impl RunResponse {
    /// The run's `status`, when it is a string.
    pub fn status(&self) -> Option<&str> {
        self.run.get("status").and_then(Value::as_str)
    }
}

/// One page of `GET /runs/{id}/logs`, as parsed values: what tests and the
/// fuzzer compare. The client reads pages as [`RawLogsPage`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsPage {
    /// The entries, in the order the API sent them.
    pub entries: Vec<Value>,
    /// The cursor of the next (older) page, if the API says there is one.
    pub next_cursor: Option<String>,
}

/// One page of `GET /runs/{id}/logs` as the API sent it: the body's text,
/// where each entry is in it (and its timestamp), and the next cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawLogsPage {
    text: String,
    entries: Vec<RawLogEntry>,
    /// The cursor of the next (older) page, if the API says there is one.
    pub next_cursor: Option<String>,
}

/// Where one entry of a [`RawLogsPage`] is, and when it was logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLogEntry {
    /// Its JSON text's place in the page's text.
    pub span: Range<usize>,
    /// Its timestamp (SPEC §5) in unix microseconds, when it has one.
    pub ts_us: Option<i64>,
}

impl RawLogsPage {
    /// The entries, in the order the API sent them.
    pub fn entries(&self) -> &[RawLogEntry] {
        &self.entries
    }

    /// The JSON text of entry `i`.
    pub fn entry_text(&self, i: usize) -> Option<&str> {
        self.text.get(self.entries.get(i)?.span.clone())
    }

    /// The page's text (entries are slices of it) and its entries.
    pub fn into_parts(self) -> (String, Vec<RawLogEntry>) {
        (self.text, self.entries)
    }

    /// The page as parsed values.
    pub fn to_values(&self) -> LogsPage {
        LogsPage {
            entries: (0..self.entries.len())
                .filter_map(|i| serde_json::from_str(self.entry_text(i)?).ok())
                .collect(),
            next_cursor: self.next_cursor.clone(),
        }
    }
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
///   text) of the oldest entry. The order of entries within a page is not
///   published: the oldest is the one with the earliest timestamp when
///   every entry has one, else the first;
/// - an object with no entries array is an empty page with no cursor (which
///   ends paging), whatever else it holds; a key given twice counts as its
///   last value;
/// - a body that is neither an object nor an array (`null`, a string...),
///   or not JSON, is an `INVALID_BODY` error, retryable.
pub fn read_logs_page(text: String) -> Result<RawLogsPage, OpensteerError> {
    let (entries, next_cursor) = read_page_parts(&text)?;
    Ok(RawLogsPage {
        text,
        entries,
        next_cursor,
    })
}

/// [`read_logs_page`] of a parsed body, as values (for tests and fuzzing).
pub fn parse_logs_page(body: &Value) -> Result<LogsPage, OpensteerError> {
    read_logs_page(body.to_string()).map(|p| p.to_values())
}

fn read_page_parts(text: &str) -> Result<(Vec<RawLogEntry>, Option<String>), OpensteerError> {
    let invalid = |what: &dyn std::fmt::Display| OpensteerError::invalid_body("a logs page", what);
    let body: &RawValue = serde_json::from_str(text).map_err(|e| invalid(&e))?;
    let (array, members) = match body.get().as_bytes().first() {
        Some(b'[') => (Some(body), None),
        Some(b'{') => {
            let f = fields(
                body,
                [
                    "logs",
                    "items",
                    "data",
                    "entries",
                    "nextCursor",
                    "nextBeforeLogCursor",
                    "beforeLogCursor",
                    "cursor",
                    "pagination",
                    "hasMore",
                ],
            )
            .ok_or_else(|| invalid(&"an object that cannot be read"))?;
            let array = f[..ENTRY_KEYS.len()]
                .iter()
                .flatten()
                .copied()
                .find(|v| v.get().starts_with('['));
            (array, Some(f))
        }
        _ => {
            return Err(invalid(&format_args!(
                "expected an object or an array, got {}",
                raw_kind(body)
            )))
        }
    };
    let Some(array) = array else {
        return Ok((Vec::new(), None));
    };
    let items: Vec<&RawValue> = serde_json::from_str(array.get()).map_err(|e| invalid(&e))?;
    let base = text.as_ptr() as usize;
    let entries: Vec<RawLogEntry> = items
        .iter()
        .map(|item| {
            let start = item.get().as_ptr() as usize - base;
            RawLogEntry {
                span: start..start + item.get().len(),
                ts_us: fields(item, TIMESTAMP_KEYS)
                    .and_then(|ts| ts.into_iter().flatten().find(|v| v.get() != "null"))
                    .and_then(timestamp_us),
            }
        })
        .collect();
    let Some(f) = members else {
        return Ok((entries, None));
    };
    let explicit = f[ENTRY_KEYS.len()..ENTRY_KEYS.len() + CURSOR_KEYS.len()]
        .iter()
        .flatten()
        .find_map(|v| non_empty_string(v))
        .or_else(|| {
            let pagination = f[8]?;
            non_empty_string(fields(pagination, ["nextCursor"])?[0]?)
        });
    let next_cursor = match explicit {
        Some(cursor) => Some(cursor),
        None if f[9].is_some_and(|v| v.get() == "true") => {
            oldest(&entries).and_then(|i| entry_cursor(items[i]))
        }
        None => None,
    };
    Ok((entries, next_cursor))
}

/// The index of the oldest entry: the earliest timestamp (the first of
/// equals) when every entry has one, else the first entry.
fn oldest(entries: &[RawLogEntry]) -> Option<usize> {
    let stamps: Option<Vec<i64>> = entries.iter().map(|e| e.ts_us).collect();
    match stamps {
        Some(stamps) => stamps
            .iter()
            .enumerate()
            .min_by_key(|(i, ts)| (**ts, *i))
            .map(|(i, _)| i),
        None => (!entries.is_empty()).then_some(0),
    }
}

/// The values of `names` in the JSON object `raw` (the last, should a name
/// repeat), skipping every other member without building it; `None` when
/// `raw` is not an object.
fn fields<'a, const N: usize>(
    raw: &'a RawValue,
    names: [&str; N],
) -> Option<[Option<&'a RawValue>; N]> {
    if !raw.get().starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Fields { names: &names }.deserialize(&mut de).ok()
}

struct Fields<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Fields<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Fields<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(i) = map.next_key_seed(KeyIndex(self.names))? {
            match i {
                Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A key's position in a list of names, read without allocating.
struct KeyIndex<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|n| *n == v))
    }
}

/// A JSON string's value, when it is one and not empty.
fn non_empty_string(v: &RawValue) -> Option<String> {
    if !v.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<String>(v.get())
        .ok()
        .filter(|s| !s.is_empty())
}

/// The cursor an entry stands for: its `cursor`, else its `id`; strings or
/// numbers (as their text).
fn entry_cursor(entry: &RawValue) -> Option<String> {
    let as_cursor = |v: Option<&RawValue>| {
        let v = v?;
        match v.get().as_bytes().first()? {
            b'"' => non_empty_string(v),
            b'-' | b'0'..=b'9' => Some(v.get().to_owned()),
            _ => None,
        }
    };
    let [cursor, id] = fields(entry, ["cursor", "id"])?;
    as_cursor(cursor).or_else(|| as_cursor(id))
}

/// What kind of JSON value `raw` is, for messages.
fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
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
