use serde_json::Value;

use crate::signature::VerifiedBody;

/// The longest event id or run id we store; longer values are refused as invalid.
pub const MAX_ID_LEN: usize = 256;

/// The longest event type we store.
pub const MAX_TYPE_LEN: usize = 128;

/// How deep arrays and objects may nest in a body: serde_json's recursion
/// limit, which keeps a hostile body from exhausting the stack. Deeper
/// bodies are refused with [`PayloadError::TooDeep`].
pub const MAX_JSON_DEPTH: usize = 127;

/// The event types steerhook processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `run.succeeded`
    RunSucceeded,
    /// `run.failed`
    RunFailed,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunSucceeded => "run.succeeded",
            Self::RunFailed => "run.failed",
        }
    }

    /// Every type, in a stable order.
    pub const ALL: [EventType; 2] = [Self::RunSucceeded, Self::RunFailed];
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "run.succeeded" => Ok(Self::RunSucceeded),
            "run.failed" => Ok(Self::RunFailed),
            other => Err(format!(
                "unknown event type {other:?}; expected run.succeeded or run.failed"
            )),
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verified body is not a usable event (SPEC §4 step 6: `PAYLOAD_INVALID`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON at all.
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    /// JSON whose arrays and objects nest deeper than [`MAX_JSON_DEPTH`].
    #[error(
        "the body's arrays and objects nest deeper than {MAX_JSON_DEPTH} levels, \
         the most steerhook reads"
    )]
    TooDeep,
    /// JSON, but not an object.
    #[error("the body is JSON but not an object")]
    NotAnObject,
    /// Neither `type` nor `event` is a string.
    #[error("the body has no event type (neither \"type\" nor \"event\" is a string)")]
    NoType,
    /// A `run.*` event without a run id at any of the SPEC §5 places.
    #[error(
        "the {0} event has no run id (looked at data.run.id, data.runId, run.id, runId, data.id)"
    )]
    NoRunId(String),
    /// An id containing a NUL byte, which no hook environment can carry.
    #[error("the {0} contains a NUL character")]
    NulInId(&'static str),
    /// An id or type longer than we store.
    #[error("the {0} is longer than {MAX_ID_LEN} bytes")]
    TooLong(&'static str),
}

/// A verified, well-formed run event, ready to be stored.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    /// The sender's id (`id`, else `eventId`), or one we generated. The
    /// store may keep the event under an id derived from it (SPEC §5).
    pub id: String,
    /// The id the sender gave, when it gave one.
    pub sender_id: Option<String>,
    /// `run.succeeded` or `run.failed`.
    pub event_type: EventType,
    /// The run the event is about.
    pub run_id: String,
    /// The signed timestamp `t`.
    pub signed_at: u64,
    /// The raw body, byte for byte as received.
    pub body: Vec<u8>,
}

impl IncomingEvent {
    /// The dedupe key: event type + run id (SPEC §5). A run reaches a terminal
    /// state once; the sender's retries may carry new ids and timestamps.
    pub fn dedupe_key(&self) -> (EventType, &str) {
        (self.event_type, &self.run_id)
    }
}

/// What a verified body turned out to be.
#[derive(Debug, Clone)]
pub enum ReadEvent {
    /// A `run.succeeded` / `run.failed` event.
    Run(IncomingEvent),
    /// Some other event type; acknowledged and ignored (SPEC §4 step 7).
    Other {
        /// The type the sender gave.
        event_type: String,
    },
}

/// A verified body that is not a usable event; the body comes back so it can be quarantined.
#[derive(Debug)]
pub struct Rejected {
    /// Why.
    pub error: PayloadError,
    /// The body, as received.
    pub body: VerifiedBody,
}

impl ReadEvent {
    /// Reads a verified body as SPEC §5 says. Takes a [`VerifiedBody`], so
    /// JSON is never parsed before the signature has been checked.
    pub fn parse(body: VerifiedBody) -> Result<Self, Rejected> {
        match Self::read(&body) {
            Ok(Parsed::Other(event_type)) => Ok(Self::Other { event_type }),
            Ok(Parsed::Run {
                id,
                sender_id,
                event_type,
                run_id,
            }) => Ok(Self::Run(IncomingEvent {
                id,
                sender_id,
                event_type,
                run_id,
                signed_at: body.timestamp(),
                body: body.into_bytes(),
            })),
            Err(error) => Err(Rejected { error, body }),
        }
    }

    fn read(body: &VerifiedBody) -> Result<Parsed, PayloadError> {
        if let Some(fields) = Fields::lean(body.bytes()) {
            return fields.into_parsed();
        }
        // Numbers are kept as their text (serde_json's arbitrary_precision),
        // so `1e99999` or a 5,000-digit integer is valid JSON like any other.
        let value: Value = serde_json::from_slice(body.bytes()).map_err(|e| {
            // serde_json has no error kind for its recursion limit; its
            // message is the only sign (pinned by a test below).
            if e.to_string().starts_with("recursion limit exceeded") {
                PayloadError::TooDeep
            } else {
                PayloadError::NotJson(e.to_string())
            }
        })?;
        Fields::from_tree(&value)?.into_parsed()
    }
}

/// The fields SPEC §5 reads, each the first string found where it may be.
#[derive(Debug, PartialEq, Eq)]
struct Fields<'a> {
    /// `type`, else `event`.
    event_type: Option<&'a str>,
    /// `id`, else `eventId`.
    id: Option<&'a str>,
    /// `data.run.id`, `data.runId`, `run.id`, `runId`, `data.id`.
    run_id: Option<&'a str>,
}

/// Nesting the lean read takes; deeper bodies go through the tree, which
/// refuses past [`MAX_JSON_DEPTH`].
const LEAN_MAX_DEPTH: usize = 64;

/// The body as the lean read sees it: only the fields of SPEC §5, each a
/// string borrowed from the body; everything else is checked and skipped.
#[derive(serde::Deserialize)]
struct LeanBody<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow)]
    event: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(borrow, rename = "eventId")]
    event_id: Option<&'a str>,
    #[serde(borrow, rename = "runId")]
    run_id: Option<&'a str>,
    #[serde(borrow)]
    run: Option<Object<LeanRun<'a>>>,
    #[serde(borrow)]
    data: Option<Object<LeanData<'a>>>,
}

#[derive(serde::Deserialize)]
struct LeanRun<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct LeanData<'a> {
    #[serde(borrow)]
    run: Option<Object<LeanRun<'a>>>,
    #[serde(borrow, rename = "runId")]
    run_id: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a str>,
}

/// A struct read only from a JSON object. serde's derived structs also
/// read an array of their fields in order (`"data":[null,"a","b"]` would
/// give `data.runId = "a"`), which the tree never does.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
            .map(Object)
    }
}

impl<'a> Fields<'a> {
    /// Reads the fields without building the body's tree, when that is
    /// sure to give what the tree gives; `None` sends the body through the
    /// tree. Not taken: bodies nested deeper than [`LEAN_MAX_DEPTH`]
    /// (serde_json bounds depth only while building values), with a `\u`
    /// escape (skipping one does not check surrogates) or bytes that are
    /// not UTF-8 (skipping a string does not check them), and any body
    /// the typed read refuses: a field of another type or given twice, a
    /// string with escapes (it cannot be borrowed), JSON that is not an
    /// object or not JSON.
    fn lean(bytes: &'a [u8]) -> Option<Self> {
        if !plain_and_shallow(bytes, LEAN_MAX_DEPTH) || std::str::from_utf8(bytes).is_err() {
            return None;
        }
        let Object(b): Object<LeanBody<'a>> = serde_json::from_slice(bytes).ok()?;
        let data = b.data.as_ref().map(|Object(d)| d);
        Some(Self {
            event_type: b.kind.or(b.event),
            id: b.id.or(b.event_id),
            run_id: data
                .and_then(|d| d.run.as_ref().and_then(|Object(r)| r.id))
                .or_else(|| data.and_then(|d| d.run_id))
                .or_else(|| b.run.as_ref().and_then(|Object(r)| r.id))
                .or(b.run_id)
                .or_else(|| data.and_then(|d| d.id)),
        })
    }

    /// Reads the fields from the body's tree.
    fn from_tree(value: &'a Value) -> Result<Self, PayloadError> {
        let obj = value.as_object().ok_or(PayloadError::NotAnObject)?;
        let string = |key: &str| obj.get(key).and_then(Value::as_str);
        Ok(Self {
            event_type: string("type").or_else(|| string("event")),
            id: string("id").or_else(|| string("eventId")),
            run_id: run_id_of(value),
        })
    }

    fn into_parsed(self) -> Result<Parsed, PayloadError> {
        let event_type = self.event_type.ok_or(PayloadError::NoType)?;
        if event_type.len() > MAX_TYPE_LEN {
            return Err(PayloadError::TooLong("event type"));
        }
        let Ok(known) = event_type.parse::<EventType>() else {
            if event_type.starts_with("run.") && self.run_id.is_none() {
                return Err(PayloadError::NoRunId(event_type.to_owned()));
            }
            return Ok(Parsed::Other(event_type.to_owned()));
        };
        let run_id = self
            .run_id
            .ok_or_else(|| PayloadError::NoRunId(event_type.to_owned()))?
            .to_owned();
        if run_id.is_empty() {
            return Err(PayloadError::NoRunId(event_type.to_owned()));
        }
        if run_id.len() > MAX_ID_LEN {
            return Err(PayloadError::TooLong("run id"));
        }
        // Ids reach hooks as environment variables, which cannot hold NUL.
        if run_id.contains('\0') {
            return Err(PayloadError::NulInId("run id"));
        }
        let sender_id = match self.id {
            Some(id) if id.len() > MAX_ID_LEN => return Err(PayloadError::TooLong("event id")),
            Some(id) if id.contains('\0') => return Err(PayloadError::NulInId("event id")),
            Some(id) if !id.is_empty() => Some(id.to_owned()),
            _ => None,
        };
        let id = sender_id
            .clone()
            .unwrap_or_else(|| format!("evt_{}", uuid::Uuid::new_v4().simple()));
        Ok(Parsed::Run {
            id,
            sender_id,
            event_type: known,
            run_id,
        })
    }
}

enum Parsed {
    Other(String),
    Run {
        id: String,
        sender_id: Option<String>,
        event_type: EventType,
        run_id: String,
    },
}

/// The first string among `data.run.id`, `data.runId`, `run.id`, `runId`, `data.id`.
fn run_id_of(v: &Value) -> Option<&str> {
    [
        &["data", "run", "id"][..],
        &["data", "runId"],
        &["run", "id"],
        &["runId"],
        &["data", "id"],
    ]
    .iter()
    .find_map(|path| {
        path.iter()
            .try_fold(v, |v, key| v.get(key))
            .and_then(Value::as_str)
    })
}

/// Whether `bytes` has no `\u` escape and nests arrays and objects at most
/// `max` deep (brackets inside strings do not count); one pass, no parse.
/// Inside a string only a quote or a backslash matters, so the scan jumps
/// between them (most of a body's bytes are inside strings).
fn plain_and_shallow(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                i += 1;
                loop {
                    let Some(k) = bytes
                        .get(i..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        // An unterminated string: the parse refuses it.
                        return true;
                    };
                    i += k;
                    if bytes[i] == b'"' {
                        break;
                    }
                    // A backslash: the byte after it is escaped.
                    if bytes.get(i + 1) == Some(&b'u') {
                        return false;
                    }
                    i += 2;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::signature::{sign, Verifier};
    use std::time::{Duration, UNIX_EPOCH};

    fn read(body: &str) -> Result<ReadEvent, PayloadError> {
        let h = sign("s", 100, body.as_bytes());
        let v = Verifier::new(vec![Secret::new("s")], 10)
            .verify(
                Some(h.as_bytes()),
                body.as_bytes().to_vec(),
                UNIX_EPOCH + Duration::from_secs(100),
            )
            .unwrap();
        ReadEvent::parse(v).map_err(|r| r.error)
    }

    fn run(body: &str) -> IncomingEvent {
        match read(body).unwrap() {
            ReadEvent::Run(e) => e,
            other => panic!("expected a run event, got {other:?}"),
        }
    }

    #[test]
    fn run_id_is_read_from_each_place_in_order() {
        let cases = [
            (
                r#"{"type":"run.failed","data":{"run":{"id":"a"},"runId":"b"}}"#,
                "a",
            ),
            (
                r#"{"type":"run.failed","data":{"runId":"b","id":"e"},"runId":"d"}"#,
                "b",
            ),
            (r#"{"type":"run.failed","run":{"id":"c"},"runId":"d"}"#, "c"),
            (
                r#"{"type":"run.failed","runId":"d","data":{"id":"e"}}"#,
                "d",
            ),
            (r#"{"type":"run.failed","data":{"id":"e"}}"#, "e"),
            (
                r#"{"type":"run.failed","data":{"run":{"id":7},"id":"e"}}"#,
                "e",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(run(body).run_id, want, "body {body}");
        }
    }

    #[test]
    fn type_falls_back_to_event_and_id_to_event_id() {
        let e = run(r#"{"event":"run.succeeded","eventId":"x1","runId":"r"}"#);
        assert_eq!(e.event_type, EventType::RunSucceeded);
        assert_eq!(e.id, "x1");
        let e = run(r#"{"type":"run.succeeded","runId":"r"}"#);
        assert!(e.id.starts_with("evt_"), "generated id {}", e.id);
    }

    #[test]
    fn invalid_payloads_are_refused_with_a_reason() {
        assert!(matches!(read("nope"), Err(PayloadError::NotJson(_))));
        assert_eq!(read("[1]").unwrap_err(), PayloadError::NotAnObject);
        assert_eq!(read("{}").unwrap_err(), PayloadError::NoType);
        assert!(matches!(
            read(r#"{"type":"run.failed"}"#),
            Err(PayloadError::NoRunId(_))
        ));
        assert!(matches!(
            read(r#"{"type":"run.canceled"}"#),
            Err(PayloadError::NoRunId(_))
        ));
        assert!(
            matches!(
                read(r#"{"type":"run.failed","runId":""}"#),
                Err(PayloadError::NoRunId(_))
            ),
            "an empty run id is no run id, not a long one"
        );
    }

    #[test]
    fn numbers_beyond_f64_are_valid_json() {
        for number in ["1e99999", "-1e-99999", &"9".repeat(5_000), "0.1e400"] {
            let body = format!(r#"{{"type":"run.failed","runId":"r","n":{number}}}"#);
            assert_eq!(run(&body).body, body.as_bytes(), "{number}");
        }
    }

    #[test]
    fn nesting_up_to_the_limit_is_read_and_deeper_is_refused_as_too_deep() {
        let nested = |depth: usize| {
            // The body object is the first level.
            let inner = "[".repeat(depth - 1) + &"]".repeat(depth - 1);
            format!(r#"{{"type":"run.failed","runId":"r","deep":{inner}}}"#)
        };
        assert!(matches!(
            read(&nested(MAX_JSON_DEPTH)),
            Ok(ReadEvent::Run(_))
        ));
        let too_deep = read(&nested(MAX_JSON_DEPTH + 1)).unwrap_err();
        assert_eq!(too_deep, PayloadError::TooDeep);
        assert!(
            too_deep.to_string().contains("nest deeper than 127 levels"),
            "{too_deep}"
        );
    }

    #[test]
    fn ids_with_nul_are_refused() {
        assert_eq!(
            read(r#"{"type":"run.failed","runId":"a\u0000b"}"#).unwrap_err(),
            PayloadError::NulInId("run id")
        );
        assert_eq!(
            read(r#"{"type":"run.failed","runId":"a","id":"x\u0000"}"#).unwrap_err(),
            PayloadError::NulInId("event id")
        );
    }

    #[test]
    fn other_types_are_recognised_as_other() {
        assert!(matches!(
            read(r#"{"type":"scraper.updated"}"#).unwrap(),
            ReadEvent::Other { event_type } if event_type == "scraper.updated"
        ));
    }

    /// The lean read, where it is taken, gives exactly what the tree gives.
    #[test]
    fn the_lean_read_agrees_with_the_tree_or_steps_aside() {
        let deep = format!(
            "{{\"type\":\"run.succeeded\",\"runId\":\"r\",\"x\":{}1{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        let bodies = [
            r#"{"type":"run.succeeded","id":"evt_1","data":{"run":{"id":"run_1"}}}"#,
            r#"{"event":"run.failed","eventId":"e","data":{"runId":"r2"}}"#,
            r#"{"type":5,"event":"run.failed","runId":"r"}"#,
            r#"{"type":"run.succeeded","id":7,"eventId":"e","run":{"id":"r"}}"#,
            r#"{"type":"run.succeeded","id":"","eventId":"e","runId":"r"}"#,
            r#"{"type":"run.succeeded","runId":"a","runId":"b"}"#,
            r#"{"type":"run.succeeded","data":{"run":"x","id":"d"}}"#,
            r#"{"type":"run.succeeded","data":null,"run":{"id":null},"runId":"r"}"#,
            r#"{"type":"run.succeeded","runId":"r","n":1e99999,"s":"a\"b"}"#,
            r#"{"type":"run.succeeded","runId":"r\"q"}"#,
            r#"{"type":"run.succeeded","runId":"r","s":"\ud800"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"run.unknown"}"#,
            r#"{"type":"run.succeeded"}"#,
            r#"[1,2]"#,
            r#"["run.succeeded",null,null,null,"r",null,null]"#,
            r#"{"type":"run.succeeded","data":[null,"run.succeeded","run.succeeded"]}"#,
            r#"{"type":"run.succeeded","data":{"run":["r"]},"run":["q"]}"#,
            r#"{"type":"run.succeeded","runId":"r"} x"#,
            r#"{"type":"run.succeeded","runId":"r","a":[1,{"b":"]]]"}]}"#,
            deep.as_str(),
        ];
        for body in bodies {
            let tree = serde_json::from_slice::<Value>(body.as_bytes()).ok();
            // Where the lean read steps aside (None), the tree decides.
            if let Some(lean) = Fields::lean(body.as_bytes()) {
                assert_eq!(
                    Some(Ok(lean)),
                    tree.as_ref().map(Fields::from_tree),
                    "{body}"
                );
            }
        }
        // Taken for the common shapes, not for what it cannot check.
        assert!(Fields::lean(bodies[0].as_bytes()).is_some());
        assert!(
            Fields::lean(bodies[8].as_bytes()).is_some(),
            "an escape other than \\u is fine"
        );
        assert!(
            Fields::lean(bodies[10].as_bytes()).is_none(),
            "a \\u escape"
        );
        assert!(
            Fields::lean(deep.as_bytes()).is_none(),
            "deeper than it checks"
        );
        assert!(
            Fields::lean(bodies[5].as_bytes()).is_none(),
            "a field given twice"
        );
        assert!(
            Fields::lean(b"{\"type\":\"run.succeeded\",\"runId\":\"r\",\"s\":\"\xff\"}").is_none(),
            "not UTF-8"
        );
    }

    /// Any value whose keys are the ones SPEC §5 reads (and one other) and
    /// whose strings include the event types, empty ones, escapes and
    /// non-ASCII text.
    fn arb_body() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let string = prop_oneof![
            Just("run.succeeded".to_owned()),
            Just("run.failed".to_owned()),
            Just("ping".to_owned()),
            Just(String::new()),
            Just("q\"uote\\d\n".to_owned()),
            Just("\u{1}ctl".to_owned()),
            Just("é ü 😀".to_owned()),
            "[a-z0-9_]{1,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            string.prop_map(Value::String),
        ];
        let key = prop_oneof![
            Just("type".to_owned()),
            Just("event".to_owned()),
            Just("id".to_owned()),
            Just("eventId".to_owned()),
            Just("runId".to_owned()),
            Just("run".to_owned()),
            Just("data".to_owned()),
            Just("x".to_owned()),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// The pre-scan as first written, one byte at a time: the fast one
    /// must say what it says.
    fn plain_and_shallow_bytewise(bytes: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in bytes {
            if in_string {
                if escaped {
                    if b == b'u' {
                        return false;
                    }
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    #[test]
    fn the_pre_scan_sees_escapes_and_depth() {
        let cases: [(&[u8], bool); 9] = [
            (br#"{"a":"b"}"#, true),
            (br#"{"a":"\u0041"}"#, false),
            (br#"{"a":"\\u0041"}"#, true),
            (br#"{"a":"\"[[[["}"#, true),
            (br#"[[["#, false),
            (br#"["[[[[[["]"#, true),
            (br#"{"a":"\"#, true),
            (br#"{"a":"\u"#, false),
            (b"", true),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                plain_and_shallow(bytes, 2),
                want,
                "{}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(plain_and_shallow_bytewise(bytes, 2), want);
        }
    }

    proptest::proptest! {
        // About one body in ten takes the lean read: 1,024 cases make ~100.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Wherever the lean read is taken, it reads what the tree reads.
        #[test]
        fn the_lean_read_agrees_with_the_tree(body in arb_body()) {
            let text = serde_json::to_vec(&body).unwrap();
            if let Some(lean) = Fields::lean(&text) {
                proptest::prop_assert_eq!(Ok(lean), Fields::from_tree(&body));
            }
        }

        /// The jumping pre-scan agrees with the byte-at-a-time one on any
        /// bytes, most of them the ones it looks for.
        #[test]
        fn the_pre_scan_agrees_with_the_bytewise_one(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'"'),
                    proptest::strategy::Just(b'\\'),
                    proptest::strategy::Just(b'u'),
                    proptest::strategy::Just(b'['),
                    proptest::strategy::Just(b']'),
                    proptest::strategy::Just(b'{'),
                    proptest::strategy::Just(b'}'),
                    proptest::prelude::any::<u8>(),
                ],
                0..64,
            ),
            max in 0usize..4,
        ) {
            proptest::prop_assert_eq!(
                plain_and_shallow(&bytes, max),
                plain_and_shallow_bytewise(&bytes, max)
            );
        }
    }
}
