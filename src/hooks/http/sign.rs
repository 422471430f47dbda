//! The Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>` over `<id>.<timestamp>.<body>`),
//! computed over a body read in chunks.
//!
//! Why not the `standardwebhooks` crate at run time: its `Webhook::sign`
//! takes the whole body as one `&[u8]`, insists that it is UTF-8, and copies
//! it into a `String` to sign it. A hook document with every log page may be
//! tens of megabytes and is streamed from its payload file, never held in
//! memory; so the HMAC is fed chunk by chunk here, and the crate checks this
//! signer in the tests below (and the receiver's own library, from PyPI, in
//! `tests/hooks/http.rs`).

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The prefix Standard Webhooks secrets are written with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key accepted, in bytes (128 bits).
pub const MIN_KEY_BYTES: usize = 16;
/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Padding is optional in the secrets receivers hand out, as for their
/// libraries (the Python one pads before decoding).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A hook's signing key: the bytes of `whsec_<base64>`. `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Reads `whsec_<base64>` (the prefix is optional), or says what is wrong
    /// without repeating the value.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key = LENIENT.decode(encoded.trim()).map_err(|_| {
            "is not a Standard Webhooks secret: `whsec_` followed by base64 (make one with `echo whsec_$(openssl rand -base64 32)` and give the same to the receiver)".to_owned()
        })?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(format!(
                "decodes to {} bytes; a key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes (make one with `echo whsec_$(openssl rand -base64 32)`)",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// A key for a `secret_file` that was not read (commands that send nothing).
    pub fn unread() -> Self {
        Self(Vec::new())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `webhook-id`: the same for every attempt and every replay of one event
/// to one hook, so the receiver can drop what it already took; different
/// for two hooks, whose receivers may be one service.
pub fn webhook_id(event_id: &str, hook: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(event_id.as_bytes());
    // Hook names cannot hold a NUL: the pair is read back unambiguously.
    digest.update([0u8]);
    digest.update(hook.as_bytes());
    let hash = digest.finalize();
    format!("msg_{}", hex::encode(&hash[..16]))
}

/// An HMAC over `<id>.<timestamp>.` and then the body, fed in pieces.
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl Signer {
    /// Starts the signature of the message `id` sent at `timestamp` (unix seconds).
    pub fn new(key: &SigningKey, id: &str, timestamp: i64) -> Self {
        // HMAC accepts keys of any length, so new_from_slice cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key.0).unwrap_or_else(|_| unreachable!());
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        Self { mac }
    }

    /// The next bytes of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        self.mac.update(bytes);
    }

    /// The `webhook-signature` value, `v1,<base64>`.
    pub fn finish(self) -> String {
        format!("v1,{}", STANDARD.encode(self.mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    #[test]
    fn chunked_signature_matches_the_standardwebhooks_crate() {
        let reference = standardwebhooks::Webhook::new(SECRET).unwrap();
        let key = SigningKey::parse(SECRET).unwrap();
        let body: Vec<u8> = br#"{"event":{"id":"evt_1"},"logs":["#
            .iter()
            .copied()
            .chain((0..5_000).flat_map(|i| format!("\"line {i}\",").into_bytes()))
            .chain(*b"null]}")
            .collect();
        for chunk in [1, 7, 4096, body.len()] {
            let mut signer = Signer::new(&key, "msg_abc", 1_700_000_000);
            for piece in body.chunks(chunk) {
                signer.update(piece);
            }
            assert_eq!(
                signer.finish(),
                reference.sign("msg_abc", 1_700_000_000, &body).unwrap(),
                "chunks of {chunk} bytes"
            );
        }
    }

    #[test]
    fn the_crates_published_vector_is_reproduced() {
        let key = SigningKey::parse(SECRET).unwrap();
        let mut signer = Signer::new(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553);
        signer.update(br#"{"email":"test@example.com","#);
        signer.update(br#""username":"test_user"}"#);
        assert_eq!(
            signer.finish(),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn keys_are_read_with_or_without_prefix_and_padding() {
        let padded = SigningKey::parse("whsec_MTIzNDU2Nzg5MDEyMzQ1Njc4OQ==").unwrap();
        assert_eq!(
            SigningKey::parse("MTIzNDU2Nzg5MDEyMzQ1Njc4OQ").unwrap(),
            padded
        );
        assert_eq!(padded.0, b"1234567890123456789");
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        for bad in ["whsec_not base64!", "whsec_c2hvcnQ=", "", "whsec_"] {
            let err = SigningKey::parse(bad).unwrap_err();
            let value = bad.trim_start_matches(SECRET_PREFIX);
            assert!(value.is_empty() || !err.contains(value), "{err}");
            assert!(err.contains("openssl rand"), "{err}");
        }
        assert_eq!(
            format!("{:?}", SigningKey::parse(SECRET).unwrap()),
            "[redacted]"
        );
    }

    #[test]
    fn webhook_id_is_stable_per_event_and_hook() {
        let id = webhook_id("evt_1", "airflow");
        assert_eq!(id, webhook_id("evt_1", "airflow"));
        assert!(id.starts_with("msg_") && id.len() == 4 + 32, "{id}");
        assert_ne!(id, webhook_id("evt_1", "n8n"));
        assert_ne!(id, webhook_id("evt_2", "airflow"));
        assert_ne!(webhook_id("a", "bc"), webhook_id("ab", "c"));
    }
}
