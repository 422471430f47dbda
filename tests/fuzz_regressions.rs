//! Replays every input kept under `tests/fixtures/fuzz/<target>/` through the
//! same checks the fuzz targets run (`fuzz/fuzz_targets/checks.rs`), so a
//! crash once found stays fixed without needing cargo-fuzz or nightly.
//!
//! An input `name` may have a `name.expected` beside it: the one-line outcome
//! the check must return (e.g. `SIGNATURE_MALFORMED`, `Some(120s)`). Files
//! named `README*` are documentation, not inputs. See docs/FUZZING.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

const EXPECTED_SUFFIX: &str = ".expected";

/// The inputs of one target, sorted, each with its expected outcome if any.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>, Option<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            p.is_file() && !name.starts_with("README") && !name.ends_with(EXPECTED_SUFFIX)
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).expect("a readable input");
            let mut expected_path = path.clone().into_os_string();
            expected_path.push(EXPECTED_SUFFIX);
            let expected = std::fs::read_to_string(expected_path)
                .ok()
                .map(|s| s.trim_end_matches('\n').to_owned());
            (path, data, expected)
        })
        .collect()
}

/// Runs `check` on every input of `target`; at least one input must say what it expects.
fn replay(target: &str, check: fn(&[u8]) -> String) {
    let inputs = inputs(target);
    assert!(
        inputs.iter().any(|(_, _, expected)| expected.is_some()),
        "tests/fixtures/fuzz/{target} needs at least one input with an .expected outcome"
    );
    for (path, data, expected) in inputs {
        let got = check(&data);
        if let Some(expected) = expected {
            assert_eq!(got, expected, "outcome of {}", path.display());
        }
    }
}

#[test]
fn signature_header_inputs_replay_with_their_expected_outcomes() {
    replay("signature_header", checks::check_signature_header);
}

#[test]
fn verify_inputs_replay_with_their_expected_outcomes() {
    replay("verify", checks::check_verify);
}

#[test]
fn event_payload_inputs_replay_with_their_expected_outcomes() {
    replay("event_payload", checks::check_event_payload);
}

#[test]
fn logs_page_inputs_replay_with_their_expected_outcomes() {
    replay("logs_page", checks::check_logs_page);
}

#[test]
fn retry_after_inputs_replay_with_their_expected_outcomes() {
    replay("retry_after", checks::check_retry_after);
}

/// The layout of a `verify` input round-trips, so seeds written with `join` mean what they say.
#[test]
fn verify_input_join_is_the_inverse_of_split() {
    let input = checks::VerifyInput {
        t: checks::NOW_SECS,
        flip: 3,
        header: b"t=1,v1=00".to_vec(),
        secret: "whsec_x".to_owned(),
        body: b"{\"a\":1}".to_vec(),
    };
    let again = checks::VerifyInput::split(&input.join());
    assert_eq!(
        (again.t, again.flip, again.header.as_slice()),
        (input.t, input.flip, input.header.as_slice())
    );
    assert_eq!(
        (again.secret.as_str(), again.body.as_slice()),
        (input.secret.as_str(), input.body.as_slice())
    );
}
