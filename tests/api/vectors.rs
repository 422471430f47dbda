//! The signature vectors of `tests/fixtures/signatures.json` and
//! `tests/fixtures/signatures_as_sent.json`, replayed over HTTP against the
//! real app: one app per distinct (secrets, tolerance, now).

use std::collections::BTreeMap;

use serde::Deserialize;
use steerhook::clock::ManualClock;

use crate::support::prelude::*;

#[derive(Debug, Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    secrets: Vec<String>,
    now: u64,
    tolerance_secs: u64,
    header: Option<String>,
    /// The header's raw bytes, for a header that is not UTF-8.
    header_hex: Option<String>,
    body_hex: String,
    expect: String,
}

impl Case {
    fn header(&self) -> Option<Vec<u8>> {
        match (&self.header, &self.header_hex) {
            (Some(text), _) => Some(text.as_bytes().to_vec()),
            (None, Some(hex)) => Some(hex::decode(hex).expect("header_hex is hex")),
            (None, None) => None,
        }
    }
}

fn vectors(file: &str) -> Vec<Case> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the vectors file");
    serde_json::from_str::<Vectors>(&text)
        .expect("the vectors parse")
        .cases
}

#[tokio::test]
async fn every_signature_vector_gets_its_expected_answer_over_http() {
    let cases = vectors("signatures.json");
    assert!(cases.len() >= 20, "only {} vectors", cases.len());
    check_over_http(&cases).await;
}

#[tokio::test]
async fn every_vector_of_t_as_sent_and_unknown_header_bytes_gets_its_expected_answer_over_http() {
    let cases = vectors("signatures_as_sent.json");
    assert!(cases.len() >= 15, "only {} vectors", cases.len());
    check_over_http(&cases).await;
}

async fn check_over_http(cases: &[Case]) {
    let mut groups: BTreeMap<(Vec<String>, u64, u64), Vec<&Case>> = BTreeMap::new();
    for c in cases {
        groups
            .entry((c.secrets.clone(), c.tolerance_secs, c.now))
            .or_default()
            .push(c);
    }
    let mut failures = Vec::new();
    for ((secrets, tolerance_secs, now), group) in groups {
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let app = TestApp::builder()
            .secrets(&secrets)
            .tolerance_secs(tolerance_secs)
            .clock(ManualClock::at_unix_secs(now))
            .spawn()
            .await;
        for case in group {
            let body = hex::decode(&case.body_hex).expect("body_hex is hex");
            let resp = app
                .post_webhook_bytes(&body, case.header().as_deref())
                .await;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let code = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_owned));
            let ok = if case.expect == "ok" {
                // Verified: 202 / 200 for an event, 400 for a body that is not one.
                status != 401 && (status < 500)
            } else {
                status == 401 && code.as_deref() == Some(case.expect.as_str())
            };
            if !ok {
                failures.push(format!(
                    "{}: expected {}, got {status} {text}",
                    case.name, case.expect
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "vectors failed:\n{}",
        failures.join("\n")
    );
}
