//! Verification of the `x-opensteer-signature` header (SPEC §4).
//!
//! Pure: raw bytes in, a [`VerifiedBody`] or a [`SignatureError`] out. The
//! clock is an argument so the tolerance can be tested at its edges. A
//! [`VerifiedBody`] can only be made here, so code that needs a verified body
//! (the payload parser in `domain`) cannot be called with unverified bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-opensteer-signature";

/// The length in bytes of an HMAC-SHA256 digest.
const DIGEST_LEN: usize = 32;

/// At most this many `v1` values are considered; a header with more is malformed.
/// Bounds the work a hostile header can cause (each value costs one HMAC compare per secret).
pub const MAX_SIGNATURES: usize = 8;

/// At most this many bytes of header are looked at.
pub const MAX_HEADER_BYTES: usize = 2048;

/// Why a request's signature was refused. Each reason has its SPEC §4 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `x-opensteer-signature` header.
    #[error("the request has no x-opensteer-signature header")]
    Missing,
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("the x-opensteer-signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The signed timestamp is too far from now.
    #[error("the signature timestamp is {skew_secs} s away from this server's clock (tolerance {tolerance_secs} s); check the clocks")]
    OutOfTolerance {
        /// `t - now`, in seconds (negative: in the past).
        skew_secs: i128,
        /// The configured tolerance.
        tolerance_secs: u64,
    },
    /// No `v1` value matches any configured secret.
    #[error("no v1 signature matches a configured webhook secret")]
    Mismatch,
}

impl SignatureError {
    /// The SPEC §4 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "SIGNATURE_MISSING",
            Self::Malformed(_) => "SIGNATURE_MALFORMED",
            Self::OutOfTolerance { .. } => "TIMESTAMP_OUT_OF_TOLERANCE",
            Self::Mismatch => "SIGNATURE_MISMATCH",
        }
    }
}

/// A parsed header: the timestamp and the candidate signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `t`, unix seconds.
    pub timestamp: u64,
    /// `t` exactly as sent: ASCII digits, leading zeros kept. The HMAC covers
    /// these bytes, not `timestamp` written back out (SPEC §5):
    /// `t=0001767225600` signs `"0001767225600.<body>"`.
    pub timestamp_digits: String,
    /// Every `v1` value, decoded. A well-formed value of the wrong length is
    /// kept (it can never match) so that it is reported as a mismatch.
    pub signatures: Vec<Vec<u8>>,
}

impl SignatureHeader {
    /// Parses `t=<digits>,v1=<hex>`: parts in any order, whitespace around
    /// parts allowed, several `v1` allowed, unknown parts ignored whatever
    /// their bytes, exactly one `t`.
    ///
    /// Takes the header's raw bytes: HTTP allows any octet from 0x80 up in a
    /// header value, and an unknown part holding some must not make the
    /// header unreadable. Only `t` and `v1` values have to be ASCII.
    pub fn parse(header: &[u8]) -> Result<Self, SignatureError> {
        if header.len() > MAX_HEADER_BYTES {
            return Err(SignatureError::Malformed("header too long"));
        }
        let mut timestamp = None;
        let mut signatures = Vec::new();
        // `,` and `=` are ASCII, and no byte of a multi-byte UTF-8 character
        // is, so splitting bytes cuts where splitting the text would.
        for part in header.split(|b| *b == b',') {
            let Some(eq) = part.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (key, value) = (trim(&part[..eq]), trim(&part[eq + 1..]));
            match key {
                b"t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed("more than one t= part"));
                    }
                    let digits = std::str::from_utf8(value)
                        .ok()
                        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or(SignatureError::Malformed("t= is not a number of seconds"))?;
                    let t = digits
                        .parse::<u64>()
                        .map_err(|_| SignatureError::Malformed("t= is out of range"))?;
                    timestamp = Some((t, digits.to_owned()));
                }
                b"v1" => {
                    if value.is_empty() {
                        return Err(SignatureError::Malformed("v1= is empty"));
                    }
                    let bytes = hex::decode(value)
                        .map_err(|_| SignatureError::Malformed("v1= is not hexadecimal"))?;
                    if signatures.len() == MAX_SIGNATURES {
                        return Err(SignatureError::Malformed("too many v1= parts"));
                    }
                    signatures.push(bytes);
                }
                _ => {}
            }
        }
        let (timestamp, timestamp_digits) =
            timestamp.ok_or(SignatureError::Malformed("no t= part"))?;
        if signatures.is_empty() {
            return Err(SignatureError::Malformed("no v1= part"));
        }
        Ok(Self {
            timestamp,
            timestamp_digits,
            signatures,
        })
    }
}

/// `bytes` without the whitespace around it: Unicode whitespace when the
/// bytes are UTF-8 (a non-breaking space around a part has always been
/// accepted), else ASCII whitespace. Bytes that are not UTF-8 can only be an
/// unknown part or a value that is malformed anyway.
fn trim(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.trim().as_bytes(),
        Err(_) => bytes.trim_ascii(),
    }
}

/// A request body whose signature has been verified.
///
/// Only [`Verifier::verify`] makes one: holding a `VerifiedBody` proves the
/// bytes came from a holder of a webhook secret.
#[derive(Debug, Clone)]
pub struct VerifiedBody {
    bytes: Vec<u8>,
    timestamp: u64,
}

impl VerifiedBody {
    /// The raw body, exactly as received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signed timestamp `t`.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Takes the raw body.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Verifies signatures against one or more secrets (rotation).
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl Verifier {
    /// A verifier accepting a signature made with any of `secrets`.
    pub fn new(secrets: Vec<Secret>, tolerance_secs: u64) -> Self {
        Self {
            secrets,
            tolerance_secs,
        }
    }

    /// Checks `header` (None: absent) for `body` at time `now`, in SPEC §4 order:
    /// missing, malformed, tolerance, mismatch.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        body: Vec<u8>,
        now: SystemTime,
    ) -> Result<VerifiedBody, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let parsed = SignatureHeader::parse(header)?;
        let now_secs = i128::from(match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs(),
            Err(_) => 0,
        });
        let skew = i128::from(parsed.timestamp) - now_secs;
        if skew.unsigned_abs() > u128::from(self.tolerance_secs) {
            return Err(SignatureError::OutOfTolerance {
                skew_secs: skew,
                tolerance_secs: self.tolerance_secs,
            });
        }
        // Every secret is tried against every candidate, without an early
        // exit, so the time taken does not tell which secret (if any) matched.
        let mut matched = subtle::Choice::from(0u8);
        for secret in &self.secrets {
            let expected = sign_digest(
                secret.expose().as_bytes(),
                parsed.timestamp_digits.as_bytes(),
                &body,
            );
            for candidate in &parsed.signatures {
                if candidate.len() == DIGEST_LEN {
                    matched |= expected.as_slice().ct_eq(candidate.as_slice());
                }
            }
        }
        if bool::from(matched) {
            Ok(VerifiedBody {
                bytes: body,
                timestamp: parsed.timestamp,
            })
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// HMAC-SHA256(secret, "<t>.<body>"), `t` being the digits as sent.
fn sign_digest(secret: &[u8], timestamp_digits: &[u8], body: &[u8]) -> [u8; DIGEST_LEN] {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp_digits);
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The `x-opensteer-signature` value for `body` signed with `secret` at `timestamp`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let digits = timestamp.to_string();
    format!(
        "t={digits},v1={}",
        hex::encode(sign_digest(secret.as_bytes(), digits.as_bytes(), body))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_signature_made_by_sign_verifies() {
        let v = Verifier::new(vec![Secret::new("whsec_x")], 300);
        let h = sign("whsec_x", 1000, b"{}");
        let ok = v
            .verify(
                Some(h.as_bytes()),
                b"{}".to_vec(),
                UNIX_EPOCH + Duration::from_secs(1000),
            )
            .unwrap();
        assert_eq!(ok.bytes(), b"{}");
        assert_eq!(ok.timestamp(), 1000);
    }

    #[test]
    fn too_many_v1_parts_are_malformed() {
        let h = format!("t=1,{}", ["v1=00"; MAX_SIGNATURES + 1].join(","));
        assert_eq!(
            SignatureHeader::parse(h.as_bytes()).unwrap_err().code(),
            "SIGNATURE_MALFORMED"
        );
    }
}
