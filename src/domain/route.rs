//! A hook's `match` (SPEC §3): which runs it is for. An operator with several
//! scrapers routes each one's runs to its own ETL script instead of making
//! every script filter.
//!
//! Keys are JSON Pointers (RFC 6901) into the hook document (SPEC §6); each
//! names the values it accepts. A string, number or boolean at the pointer
//! compares by its JSON text without quotes (`"products"` and `products`,
//! `3` and `"3"` are the same); anything else, or nothing at the pointer,
//! does not match. Every entry must hold.

use std::fmt;

use serde_json::value::RawValue;
use serde_json::Value;

use super::HookDocument;

/// The members of the hook document a pointer can reach. Not `logs`: a
/// run's logs may be hundreds of megabytes, streamed to the hook from the
/// store, and routing reads what the delivery has in memory.
pub const DOCUMENT_MEMBERS: [&str; 3] = ["event", "run", "enrichment"];
/// Most entries one `match` may have.
pub const MAX_MATCH_ENTRIES: usize = 32;
/// Most values one entry may accept.
pub const MAX_MATCH_VALUES: usize = 256;
/// Longest pointer or value, in bytes.
pub const MAX_MATCH_TEXT_BYTES: usize = 1024;
/// How much of a non-matching value a message quotes, in characters.
const MAX_FOUND_CHARS: usize = 80;

/// A validated `match`: pointers and the values each accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pointer: String,
    accepted: Vec<String>,
}

/// Why a delivery's run did not match: the first entry that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The pointer.
    pub pointer: String,
    /// What it accepts.
    pub accepted: Vec<String>,
    /// What the document holds there, as JSON text (shortened); `None`: nothing.
    pub found: Option<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run did not match {} = ", self.pointer)?;
        match self.accepted.as_slice() {
            [one] => write!(f, "{one}")?,
            many => write!(f, "one of {}", many.join(", "))?,
        }
        match &self.found {
            Some(found) => write!(f, " (it is {found})"),
            None => write!(f, " (there is nothing at {})", self.pointer),
        }
    }
}

/// Checks a pointer's syntax (RFC 6901) and that it reaches into the
/// document. Returns what is wrong.
fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.len() > MAX_MATCH_TEXT_BYTES {
        return Err(format!("is longer than {MAX_MATCH_TEXT_BYTES} bytes"));
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(
            "is not a JSON Pointer (RFC 6901): it must start with /, e.g. \"/run/scraper\"".into(),
        );
    };
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(
                "is not a JSON Pointer (RFC 6901): ~ must be written ~0, and / inside a key ~1"
                    .into(),
            );
        }
    }
    let first = rest.split('/').next().unwrap_or_default();
    if first == "logs" {
        return Err(
            "points into /logs, which a match cannot read (they may be hundreds of megabytes); match on /run/... or /event/payload/..."
                .into(),
        );
    }
    if !DOCUMENT_MEMBERS.contains(&first) {
        return Err(format!(
            "points outside the hook document; a match reads /{} (e.g. /event/payload/..., /run/...)",
            DOCUMENT_MEMBERS.join(", /")
        ));
    }
    Ok(())
}

/// The JSON text of a scalar without quotes; `None` for null, arrays, objects.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// `v` as a message quotes it: JSON text, shortened.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= MAX_FOUND_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_FOUND_CHARS).collect();
    cut.push('…');
    cut
}

impl Match {
    /// Builds a `match` from (pointer, accepted values). `Err((pointer,
    /// what is wrong))` names the first bad entry; the pointer is `""` when
    /// the problem is the whole table.
    pub fn new(
        entries: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Result<Self, (String, String)> {
        let mut out = Vec::new();
        for (pointer, accepted) in entries {
            check_pointer(&pointer).map_err(|m| (pointer.clone(), m))?;
            if accepted.is_empty() {
                return Err((pointer, "lists no value, so nothing would match".into()));
            }
            if accepted.len() > MAX_MATCH_VALUES {
                return Err((
                    pointer,
                    format!("lists more than {MAX_MATCH_VALUES} values"),
                ));
            }
            if accepted.iter().any(|v| v.len() > MAX_MATCH_TEXT_BYTES) {
                return Err((
                    pointer,
                    format!("has a value longer than {MAX_MATCH_TEXT_BYTES} bytes"),
                ));
            }
            out.push(Entry { pointer, accepted });
        }
        if out.is_empty() {
            return Err((
                String::new(),
                "is empty; remove it, or add e.g. \"/run/scraper\" = \"products\"".into(),
            ));
        }
        if out.len() > MAX_MATCH_ENTRIES {
            return Err((
                String::new(),
                format!("has more than {MAX_MATCH_ENTRIES} entries"),
            ));
        }
        Ok(Self { entries: out })
    }

    /// Whether `doc` (the hook document as JSON) holds every entry; the
    /// first that does not, if not.
    pub fn matches(&self, doc: &Value) -> Result<(), Mismatch> {
        for e in &self.entries {
            let at = doc.pointer(&e.pointer);
            if at
                .and_then(scalar_text)
                .is_some_and(|text| e.accepted.contains(&text))
            {
                continue;
            }
            return Err(Mismatch {
                pointer: e.pointer.clone(),
                accepted: e.accepted.clone(),
                found: at.map(shown),
            });
        }
        Ok(())
    }

    /// [`Match::matches`] on a hook document; only the members the
    /// pointers reach are turned into values.
    pub fn matches_document(&self, doc: &HookDocument) -> Result<(), Mismatch> {
        let needs = |member: &str| {
            self.entries
                .iter()
                .any(|e| e.pointer[1..].split('/').next() == Some(member))
        };
        // Text stored as valid JSON: reading it back cannot fail, and if it
        // did, nothing there matches, which is what null says.
        let parse = |raw: &RawValue| serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let mut value = serde_json::Map::new();
        if needs("event") {
            value.insert(
                "event".into(),
                serde_json::json!({
                    "id": doc.event.id,
                    "senderId": doc.event.sender_id,
                    "type": doc.event.event_type,
                    "runId": doc.event.run_id,
                    "receivedAt": doc.event.received_at,
                    "payload": parse(&doc.event.payload),
                }),
            );
        }
        if needs("run") {
            value.insert("run".into(), doc.run.as_deref().map_or(Value::Null, parse));
        }
        if needs("enrichment") {
            value.insert(
                "enrichment".into(),
                serde_json::to_value(&doc.enrichment).unwrap_or(Value::Null),
            );
        }
        self.matches(&Value::Object(value))
    }
}

impl fmt::Display for Match {
    /// `/run/scraper = products, /event/type = run.failed | run.succeeded`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} = {}", e.pointer, e.accepted.join(" | "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(entries: &[(&str, &[&str])]) -> Match {
        Match::new(
            entries
                .iter()
                .map(|(p, v)| ((*p).to_owned(), v.iter().map(|s| (*s).to_owned()).collect())),
        )
        .unwrap()
    }

    fn doc() -> Value {
        json!({
            "event": {"type": "run.succeeded", "payload": {"data": {"scraper": "products", "a/b": "slash", "m~n": "tilde"}}},
            "run": {"scraper": "products", "pages": 3, "final": true, "big": 12345678901234567890u64, "tags": ["x"], "none": null},
        })
    }

    #[test]
    fn a_scalar_compares_by_its_json_text_without_quotes() {
        let d = doc();
        for (pointer, value) in [
            ("/run/scraper", "products"),
            ("/run/pages", "3"),
            ("/run/final", "true"),
            ("/run/big", "12345678901234567890"),
            ("/event/payload/data/a~1b", "slash"),
            ("/event/payload/data/m~0n", "tilde"),
        ] {
            assert_eq!(
                rule(&[(pointer, &[value])]).matches(&d),
                Ok(()),
                "{pointer}"
            );
        }
    }

    #[test]
    fn one_of_a_list_is_enough_and_every_entry_must_hold() {
        let d = doc();
        assert!(rule(&[("/run/scraper", &["prices", "products"])])
            .matches(&d)
            .is_ok());
        let both = rule(&[
            ("/run/scraper", &["products"]),
            ("/event/type", &["run.failed"]),
        ]);
        let miss = both.matches(&d).unwrap_err();
        assert_eq!(miss.pointer, "/event/type");
        assert_eq!(
            miss.to_string(),
            "run did not match /event/type = run.failed (it is \"run.succeeded\")"
        );
    }

    #[test]
    fn nothing_null_arrays_and_objects_never_match() {
        let d = doc();
        for pointer in [
            "/run/missing",
            "/run/none",
            "/run/tags",
            "/run",
            "/enrichment/error",
        ] {
            let r = rule(&[(pointer, &["null", "[\"x\"]", ""])]);
            assert!(r.matches(&d).is_err(), "{pointer}");
        }
        let miss = rule(&[("/run/missing", &["a", "b"])])
            .matches(&d)
            .unwrap_err();
        assert_eq!(
            miss.to_string(),
            "run did not match /run/missing = one of a, b (there is nothing at /run/missing)"
        );
    }

    #[test]
    fn invalid_pointers_are_refused_naming_them() {
        for (pointer, why) in [
            ("run/scraper", "must start with /"),
            ("/run/a~2b", "~0"),
            ("/run/a~", "~0"),
            ("", "must start with /"),
            ("/payload/data", "outside the hook document"),
            ("/logs/0/message", "cannot read"),
        ] {
            let err = Match::new([(pointer.to_owned(), vec!["x".to_owned()])]).unwrap_err();
            assert_eq!(err.0, pointer);
            assert!(err.1.contains(why), "{pointer}: {}", err.1);
        }
        let err = Match::new([("/run/a".to_owned(), vec![])]).unwrap_err();
        assert!(err.1.contains("no value"), "{}", err.1);
        assert!(Match::new(Vec::new()).is_err());
    }

    #[test]
    fn it_reads_as_written() {
        let r = rule(&[
            ("/run/scraper", &["products"]),
            ("/event/type", &["run.failed", "run.succeeded"]),
        ]);
        assert_eq!(
            r.to_string(),
            "/run/scraper = products, /event/type = run.failed | run.succeeded"
        );
    }
}
