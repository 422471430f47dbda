//! The properties the fuzz targets check, shared with `tests/fuzz_regressions.rs`
//! (which includes this file with `#[path]`), so a kept input is replayed
//! through exactly the code the fuzzer ran.
//!
//! Each `check_*` takes the raw fuzz input, panics when a property does not
//! hold, and returns a one-line outcome; the regression test compares that
//! outcome with the input's `.expected` file when there is one.

// Each fuzz target uses one check; the regression test uses them all.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use steerhook::domain::{PayloadError, ReadEvent};
use steerhook::opensteer::{parse_logs_page, parse_retry_after, parse_run, ErrorClass};
use steerhook::secret::Secret;
use steerhook::signature::{
    sign, SignatureError, SignatureHeader, Verifier, MAX_HEADER_BYTES, MAX_SIGNATURES,
};

/// The clock used where the input does not choose one: 2026-01-01T00:00:00Z.
pub const NOW_SECS: u64 = 1_767_225_600;

/// The tolerance the `verify` target configures.
pub const TOLERANCE_SECS: u64 = 300;

/// `domain::event::MAX_ID_LEN` (the module is private).
const MAX_ID_LEN: usize = 256;

/// `domain::event::MAX_TYPE_LEN` (the module is private).
const MAX_TYPE_LEN: usize = 128;

/// The secret the `event_payload` target signs with.
const PAYLOAD_SECRET: &str = "whsec_fuzz";

/// The last second an HTTP-date can name (9999-12-31T23:59:59Z).
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

fn at(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn outcome<T>(result: &Result<T, SignatureError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().to_owned(),
    }
}

/// `signature_header`: the input is a header value's raw bytes.
///
/// `parse` never panics; when it accepts, the header was at most
/// `MAX_HEADER_BYTES`, it held 1..=`MAX_SIGNATURES` values each at most half
/// the header long, `t` is kept as the digits sent and they read as the
/// timestamp, and writing the result back out parses to the same value.
pub fn check_signature_header(data: &[u8]) -> String {
    let header = data;
    let result = SignatureHeader::parse(header);
    if let Ok(parsed) = &result {
        assert!(header.len() <= MAX_HEADER_BYTES, "accepted a long header");
        assert!(
            !parsed.timestamp_digits.is_empty()
                && parsed.timestamp_digits.bytes().all(|b| b.is_ascii_digit()),
            "t kept as {:?}",
            parsed.timestamp_digits
        );
        assert_eq!(
            parsed.timestamp_digits.parse::<u64>().ok(),
            Some(parsed.timestamp),
            "the digits sent are the timestamp"
        );
        assert!(
            (1..=MAX_SIGNATURES).contains(&parsed.signatures.len()),
            "{} signatures",
            parsed.signatures.len()
        );
        for sig in &parsed.signatures {
            assert!(
                sig.len() * 2 <= header.len(),
                "signature longer than header"
            );
        }
        let again = std::iter::once(format!("t={}", parsed.timestamp_digits))
            .chain(
                parsed
                    .signatures
                    .iter()
                    .map(|s| format!("v1={}", hex::encode(s))),
            )
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            SignatureHeader::parse(again.as_bytes()).as_ref(),
            Ok(parsed),
            "re-serialized {again:?} parses differently"
        );
    }
    outcome(&result)
}

/// The fields of a `verify` input.
///
/// Layout: `t` (8 bytes LE), `flip` (2 bytes LE: which body byte to flip),
/// `header_len` (2 bytes LE), `secret_len` (1 byte), then the header (raw
/// bytes, as the handler passes them), the secret (lossy UTF-8) and the body
/// (the rest). Short inputs are padded with zeros so every input is usable.
pub struct VerifyInput {
    pub t: u64,
    pub flip: usize,
    pub header: Vec<u8>,
    pub secret: String,
    pub body: Vec<u8>,
}

impl VerifyInput {
    pub fn split(data: &[u8]) -> Self {
        let mut fixed = [0u8; 13];
        let n = data.len().min(fixed.len());
        fixed[..n].copy_from_slice(&data[..n]);
        let rest = &data[n..];
        let t = u64::from_le_bytes(fixed[0..8].try_into().unwrap_or([0; 8]));
        let flip = usize::from(u16::from_le_bytes([fixed[8], fixed[9]]));
        let header_len = usize::from(u16::from_le_bytes([fixed[10], fixed[11]])).min(rest.len());
        let (header, rest) = rest.split_at(header_len);
        let secret_len = usize::from(fixed[12]).min(rest.len());
        let (secret, body) = rest.split_at(secret_len);
        Self {
            t,
            flip,
            header: header.to_vec(),
            secret: String::from_utf8_lossy(secret).into_owned(),
            body: body.to_vec(),
        }
    }

    /// The inverse of [`VerifyInput::split`], for writing seeds.
    pub fn join(&self) -> Vec<u8> {
        let header_len = u16::try_from(self.header.len()).unwrap_or(u16::MAX);
        let secret_len = u8::try_from(self.secret.len()).unwrap_or(u8::MAX);
        let mut out = Vec::new();
        out.extend_from_slice(&self.t.to_le_bytes());
        out.extend_from_slice(&u16::try_from(self.flip).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&header_len.to_le_bytes());
        out.push(secret_len);
        out.extend_from_slice(&self.header[..usize::from(header_len)]);
        out.extend_from_slice(&self.secret.as_bytes()[..usize::from(secret_len)]);
        out.extend_from_slice(&self.body);
        out
    }
}

/// `verify`: see [`VerifyInput`] for the layout.
///
/// 1. `verify(header, body)` at `t` never panics, and an accepted body is
///    handed back unchanged with the header's timestamp;
/// 2. round trip: `sign(secret, t, body)` verifies at `t`, is refused as out
///    of tolerance one second past it, a different secret is a mismatch, and
///    so is the body with any one byte flipped.
pub fn check_verify(data: &[u8]) -> String {
    let input = VerifyInput::split(data);
    let verifier = Verifier::new(vec![Secret::new(input.secret.clone())], TOLERANCE_SECS);

    // 1. Whatever the header says. A `t` too large for SystemTime reads as
    // the epoch, which is what an unrepresentable clock would give.
    let now = at(input.t).unwrap_or(UNIX_EPOCH);
    let result = verifier.verify(Some(input.header.as_slice()), input.body.clone(), now);
    if let Ok(verified) = &result {
        assert_eq!(verified.bytes(), input.body.as_slice());
        let parsed = SignatureHeader::parse(&input.header).expect("verified, so it parses");
        assert_eq!(verified.timestamp(), parsed.timestamp);
    }
    assert_eq!(
        verifier.verify(None, input.body.clone(), now).unwrap_err(),
        SignatureError::Missing
    );

    // 2. Round trip, at any representable t.
    let (Some(now), Some(late)) = (at(input.t), at(input.t.saturating_add(TOLERANCE_SECS + 1)))
    else {
        return outcome(&result);
    };
    let signed = sign(&input.secret, input.t, &input.body);
    let verified = verifier
        .verify(Some(signed.as_bytes()), input.body.clone(), now)
        .unwrap_or_else(|e| panic!("own signature refused at t: {e}"));
    assert_eq!(verified.bytes(), input.body.as_slice());
    assert_eq!(verified.timestamp(), input.t);
    assert!(
        matches!(
            verifier.verify(Some(signed.as_bytes()), input.body.clone(), late),
            Err(SignatureError::OutOfTolerance { .. })
        ),
        "accepted past the tolerance"
    );
    let other = Verifier::new(
        vec![Secret::new(format!("{}x", input.secret))],
        TOLERANCE_SECS,
    );
    assert_eq!(
        other
            .verify(Some(signed.as_bytes()), input.body.clone(), now)
            .unwrap_err(),
        SignatureError::Mismatch
    );
    if !input.body.is_empty() {
        let mut tampered = input.body.clone();
        let i = input.flip % tampered.len();
        let mask = data.last().copied().filter(|m| *m != 0).unwrap_or(1);
        tampered[i] ^= mask;
        assert_eq!(
            verifier
                .verify(Some(signed.as_bytes()), tampered, now)
                .unwrap_err(),
            SignatureError::Mismatch,
            "flipped byte {i} with {mask:#04x} still verifies"
        );
    }
    outcome(&result)
}

/// `event_payload`: the input is a webhook body; it is signed, verified, and read.
///
/// `ReadEvent::parse` never panics; a run event has a run id and an event id
/// of 1..=`MAX_ID_LEN` bytes and carries the body unchanged; another event has
/// a type of at most `MAX_TYPE_LEN` bytes; a refused body comes back unchanged.
pub fn check_event_payload(data: &[u8]) -> String {
    let header = sign(PAYLOAD_SECRET, NOW_SECS, data);
    let verified = Verifier::new(vec![Secret::new(PAYLOAD_SECRET)], 0)
        .verify(
            Some(header.as_bytes()),
            data.to_vec(),
            at(NOW_SECS).expect("2026 fits"),
        )
        .expect("signed just now");
    match ReadEvent::parse(verified) {
        Ok(ReadEvent::Run(event)) => {
            assert!(
                (1..=MAX_ID_LEN).contains(&event.run_id.len()),
                "run id of {} bytes",
                event.run_id.len()
            );
            assert!(
                (1..=MAX_ID_LEN).contains(&event.id.len()),
                "event id of {} bytes",
                event.id.len()
            );
            assert_eq!(event.body, data);
            assert_eq!(event.signed_at, NOW_SECS);
            let id = if event.id.starts_with("evt_") && event.id.len() == 36 {
                "generated"
            } else {
                event.id.as_str()
            };
            format!("run {} {} {}", event.event_type, event.run_id, id)
        }
        Ok(ReadEvent::Other { event_type }) => {
            assert!(
                event_type.len() <= MAX_TYPE_LEN,
                "type of {} bytes",
                event_type.len()
            );
            assert!(!matches!(
                event_type.as_str(),
                "run.succeeded" | "run.failed"
            ));
            format!("other {event_type}")
        }
        Err(rejected) => {
            assert_eq!(rejected.body.bytes(), data);
            let reason = match &rejected.error {
                PayloadError::NotJson(_) => "not json".to_owned(),
                PayloadError::TooDeep => "nesting too deep".to_owned(),
                PayloadError::NotAnObject => "not an object".to_owned(),
                PayloadError::NoType => "no type".to_owned(),
                PayloadError::NoRunId(t) => format!("no run id for {t}"),
                PayloadError::TooLong(what) => format!("{what} too long"),
                PayloadError::NulInId(what) => format!("{what} contains NUL"),
            };
            format!("rejected: {reason}")
        }
    }
}

/// `logs_page`: the input, when it is JSON, is a logs page and a run body.
///
/// `parse_logs_page` never panics and errs (retryably) exactly on scalars;
/// a bare array is all entries; a cursor is never empty and, when it is not
/// one of the cursor keys, comes from the oldest entry (by timestamp when
/// every entry has one, else the first). `parse_run`
/// never panics and returns the inner `run` object or the body itself.
pub fn check_logs_page(data: &[u8]) -> String {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return "not json".to_owned();
    };
    let page = match parse_logs_page(&body) {
        Err(e) => {
            assert!(
                !(body.is_object() || body.is_array()),
                "refused {body}: {e}"
            );
            assert_eq!(e.class(), ErrorClass::Retry);
            assert_eq!(e.code(), "INVALID_BODY");
            return format!("error {}", e.code());
        }
        Ok(page) => page,
    };
    assert!(body.is_object() || body.is_array(), "accepted {body}");
    if let Value::Array(entries) = &body {
        assert_eq!(&page.entries, entries);
        assert_eq!(page.next_cursor, None);
    }
    if let Some(cursor) = &page.next_cursor {
        assert!(!cursor.is_empty());
    }

    let run = parse_run(body.clone());
    match body.get("run") {
        Some(inner) if body.is_object() && inner.is_object() => assert_eq!(&run, inner),
        _ => assert_eq!(run, body),
    }

    format!(
        "{} entries, cursor {:?}",
        page.entries.len(),
        page.next_cursor
    )
}

/// `retry_after`: the input (lossy UTF-8) is a `Retry-After` value, read at
/// three clocks (the epoch, 2026, and the year ~146 billion).
///
/// `parse_retry_after` never panics; delta-seconds are taken as they are
/// (callers cap them: dispatch applies `queue.retry_after_max_secs`); a date
/// is never further away than the last HTTP-date, 9999-12-31.
pub fn check_retry_after(data: &[u8]) -> String {
    let value = String::from_utf8_lossy(data);
    let trimmed = value.trim();
    let is_delta = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit());
    let mut at_2026 = None;
    for now_secs in [0, NOW_SECS, i64::MAX as u64 / 2] {
        let now = at(now_secs).expect("fits in SystemTime");
        let result = parse_retry_after(&value, now);
        if is_delta {
            assert_eq!(result, trimmed.parse::<u64>().ok().map(Duration::from_secs));
        } else if let Some(after) = result {
            assert!(
                after.as_secs() <= MAX_HTTP_DATE_SECS.saturating_sub(now_secs),
                "{value:?} at {now_secs} is {after:?} away"
            );
        }
        if now_secs == NOW_SECS {
            at_2026 = result;
        }
    }
    format!("{at_2026:?}")
}
