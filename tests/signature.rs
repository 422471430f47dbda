//! The signature module on its own: every vector of
//! `tests/fixtures/signatures.json` and `tests/fixtures/signatures_as_sent.json`,
//! and properties — any change to one byte of the body, the timestamp, the
//! signature or the secret is refused, `t` is hashed as sent, unknown header
//! parts are ignored whatever their bytes, and no input makes it panic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use proptest::prelude::*;
use serde_json::Value;
use sha2::Sha256;
use steerhook::secret::Secret;
use steerhook::signature::{sign, SignatureError, SignatureHeader, Verifier};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The cases of a vectors file under `tests/fixtures/`.
fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

/// A case's header bytes: `header` (text), else `header_hex` (raw bytes), else absent.
fn header_of(case: &Value) -> Option<Vec<u8>> {
    match (case["header"].as_str(), case["header_hex"].as_str()) {
        (Some(text), _) => Some(text.as_bytes().to_vec()),
        (None, Some(hex)) => Some(hex::decode(hex).unwrap()),
        (None, None) => None,
    }
}

fn check_vectors(cases: &[Value]) {
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let secrets = case["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Secret::new(s.as_str().unwrap()))
            .collect();
        let verifier = Verifier::new(secrets, case["tolerance_secs"].as_u64().unwrap());
        let body = hex::decode(case["body_hex"].as_str().unwrap()).unwrap();
        let header = header_of(case);
        let got = verifier.verify(
            header.as_deref(),
            body.clone(),
            at(case["now"].as_u64().unwrap()),
        );
        match case["expect"].as_str().unwrap() {
            "ok" => {
                let v = got.unwrap_or_else(|e| panic!("case {name}: expected ok, got {e}"));
                assert_eq!(
                    v.bytes(),
                    body.as_slice(),
                    "case {name}: the body comes back untouched"
                );
            }
            code => assert_eq!(got.err().map(|e| e.code()), Some(code), "case {name}"),
        }
    }
}

#[test]
fn every_vector_gives_its_expected_outcome() {
    let cases = cases("signatures.json");
    assert!(cases.len() >= 25, "the vectors are all there");
    check_vectors(&cases);
}

#[test]
fn every_vector_of_t_as_sent_and_unknown_bytes_gives_its_expected_outcome() {
    let cases = cases("signatures_as_sent.json");
    assert!(cases.len() >= 15, "the vectors are all there");
    check_vectors(&cases);
}

/// HMAC-SHA256(secret, "<digits>.<body>") written by hand, so the
/// properties below do not check the module against itself.
fn header_signed_over(digits: &str, secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(digits.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={digits},v1={}", hex::encode(mac.finalize().into_bytes()))
}

const SECRET: &str = "whsec_property_secret";
const T: u64 = 1_767_225_600;

fn verifier() -> Verifier {
    Verifier::new(vec![Secret::new(SECRET)], 300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_correct_signature_verifies(body in proptest::collection::vec(any::<u8>(), 0..2048), skew in -300i64..=300) {
        let h = sign(SECRET, T, &body);
        let now = at((T as i64 + skew) as u64);
        prop_assert!(verifier().verify(Some(h.as_bytes()), body, now).is_ok());
    }

    #[test]
    fn changing_one_body_byte_is_a_mismatch(
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let h = sign(SECRET, T, &body);
        let mut tampered = body.clone();
        let i = index.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert_eq!(verifier().verify(Some(h.as_bytes()), tampered, at(T)).unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn changing_the_timestamp_is_a_mismatch(body in proptest::collection::vec(any::<u8>(), 0..512), delta in 1u64..=300) {
        let h = sign(SECRET, T, &body);
        let sig = h.split("v1=").nth(1).unwrap();
        for t in [T + delta, T - delta] {
            let moved = format!("t={t},v1={sig}");
            prop_assert_eq!(verifier().verify(Some(moved.as_bytes()), body.clone(), at(T)).unwrap_err(), SignatureError::Mismatch);
        }
    }

    #[test]
    fn changing_one_signature_nibble_is_a_mismatch(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        index in 0usize..64,
        nibble in 1u8..16,
    ) {
        let h = sign(SECRET, T, &body);
        let sig = h.split("v1=").nth(1).unwrap();
        let mut chars: Vec<char> = sig.chars().collect();
        let v = chars[index].to_digit(16).unwrap() as u8 ^ nibble;
        chars[index] = std::char::from_digit(v.into(), 16).unwrap();
        let changed = format!("t={T},v1={}", chars.iter().collect::<String>());
        prop_assert_eq!(verifier().verify(Some(changed.as_bytes()), body, at(T)).unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn changing_one_secret_byte_is_a_mismatch(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        index in 0usize..SECRET.len(),
        flip in 1u8..128,
    ) {
        let mut other = SECRET.as_bytes().to_vec();
        other[index] ^= flip;
        let other = String::from_utf8(other).unwrap();
        let h = sign(&other, T, &body);
        prop_assert_eq!(verifier().verify(Some(h.as_bytes()), body, at(T)).unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn no_header_makes_it_panic(header in ".{0,300}", body in proptest::collection::vec(any::<u8>(), 0..64), now in any::<u64>()) {
        let _ = SignatureHeader::parse(header.as_bytes());
        let _ = verifier().verify(Some(header.as_bytes()), body, UNIX_EPOCH + Duration::from_secs(now % (1u64 << 40)));
    }

    #[test]
    fn no_header_bytes_make_it_panic(header in proptest::collection::vec(any::<u8>(), 0..300), now in any::<u64>()) {
        let _ = SignatureHeader::parse(&header);
        let _ = verifier().verify(Some(&header), b"{}".to_vec(), UNIX_EPOCH + Duration::from_secs(now % (1u64 << 40)));
    }

    #[test]
    fn t_is_hashed_with_its_leading_zeros_as_sent(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        zeros in 1usize..24,
    ) {
        let digits = format!("{}{T}", "0".repeat(zeros));
        let as_sent = header_signed_over(&digits, SECRET, &body);
        prop_assert!(verifier().verify(Some(as_sent.as_bytes()), body.clone(), at(T)).is_ok(), "{as_sent}");
        let reformatted = header_signed_over(&T.to_string(), SECRET, &body);
        let sig = reformatted.split("v1=").nth(1).unwrap();
        let claimed = format!("t={digits},v1={sig}");
        prop_assert_eq!(
            verifier().verify(Some(claimed.as_bytes()), body, at(T)).unwrap_err(),
            SignatureError::Mismatch,
            "{} verified against the HMAC of {}", digits, T
        );
    }

    #[test]
    fn an_unknown_part_is_ignored_whatever_its_bytes(
        key in proptest::collection::vec(any::<u8>(), 0..16),
        value in proptest::collection::vec(any::<u8>(), 0..64),
        first in any::<bool>(),
    ) {
        // Any bytes but the separators; a key that trims to t or v1 is not unknown.
        let clean = |b: &Vec<u8>| b.iter().copied().filter(|b| !matches!(b, b',' | b'=')).collect::<Vec<u8>>();
        let key = clean(&key);
        let trimmed = String::from_utf8(key.clone()).map(|k| k.trim().to_owned());
        prop_assume!(!matches!(trimmed.as_deref(), Ok("t" | "v1")));
        let body = b"{}".to_vec();
        let signed = sign(SECRET, T, &body);
        let mut unknown = key;
        unknown.push(b'=');
        unknown.extend(clean(&value));
        let header = if first {
            [unknown, b",".to_vec(), signed.into_bytes()].concat()
        } else {
            [signed.into_bytes(), b",".to_vec(), unknown].concat()
        };
        prop_assert!(verifier().verify(Some(&header), body, at(T)).is_ok(), "{:?}", String::from_utf8_lossy(&header));
    }

    #[test]
    fn headers_shaped_like_the_real_one_never_panic(
        parts in proptest::collection::vec(("[tv][01]?", "[0-9a-fA-F-]{0,70}"), 0..12),
        sep in "[ ,]{1,3}",
    ) {
        let header: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let header = header.join(&sep);
        let _ = verifier().verify(Some(header.as_bytes()), b"{}".to_vec(), at(T));
    }
}
