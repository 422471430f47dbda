//! The signature module on its own: every vector of
//! `tests/fixtures/signatures.json`, and properties — any change to one byte
//! of the body, the timestamp, the signature or the secret is refused, and no
//! input makes it panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::Value;
use steerhook::secret::Secret;
use steerhook::signature::{sign, SignatureError, SignatureHeader, Verifier};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn every_vector_gives_its_expected_outcome() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/signatures.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 25, "the vectors are all there");
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
        let header = case["header"].as_str();
        let got = verifier.verify(header, body.clone(), at(case["now"].as_u64().unwrap()));
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
        prop_assert!(verifier().verify(Some(&h), body, now).is_ok());
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
        prop_assert_eq!(verifier().verify(Some(&h), tampered, at(T)).unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn changing_the_timestamp_is_a_mismatch(body in proptest::collection::vec(any::<u8>(), 0..512), delta in 1u64..=300) {
        let h = sign(SECRET, T, &body);
        let sig = h.split("v1=").nth(1).unwrap();
        for t in [T + delta, T - delta] {
            let moved = format!("t={t},v1={sig}");
            prop_assert_eq!(verifier().verify(Some(&moved), body.clone(), at(T)).unwrap_err(), SignatureError::Mismatch);
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
        prop_assert_eq!(verifier().verify(Some(&changed), body, at(T)).unwrap_err(), SignatureError::Mismatch);
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
        prop_assert_eq!(verifier().verify(Some(&h), body, at(T)).unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn no_header_makes_it_panic(header in ".{0,300}", body in proptest::collection::vec(any::<u8>(), 0..64), now in any::<u64>()) {
        let _ = SignatureHeader::parse(&header);
        let _ = verifier().verify(Some(&header), body, UNIX_EPOCH + Duration::from_secs(now % (1u64 << 40)));
    }

    #[test]
    fn headers_shaped_like_the_real_one_never_panic(
        parts in proptest::collection::vec(("[tv][01]?", "[0-9a-fA-F-]{0,70}"), 0..12),
        sep in "[ ,]{1,3}",
    ) {
        let header: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let header = header.join(&sep);
        let _ = verifier().verify(Some(&header), b"{}".to_vec(), at(T));
    }
}
