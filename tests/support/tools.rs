//! The outside tools some tests run (systemd-analyze, nginx, promtool,
//! dpkg-deb, cargo-deb, man). Outside CI a missing tool skips the test with
//! a printed reason. Under CI (`STEERHOOK_CI=1`, set by `.ci/run`, which
//! installs every one of them) it fails the test: a skipped test prints
//! `ok`, and a tool that silently failed to install must not pass as one.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

/// The variable `.ci/run` sets: every tool must be there.
pub const CI_ENV: &str = "STEERHOOK_CI";

/// Whether this run is CI's (`STEERHOOK_CI=1`).
pub fn in_ci() -> bool {
    std::env::var_os(CI_ENV).is_some_and(|v| v == "1")
}

/// `name` on PATH, or in the sbin directories a non-root PATH may lack.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The tool `name`, or `None` once [`skip_or_fail`] has said why `test`
/// cannot run; `install` tells how to get it.
pub fn require_tool(test: &str, name: &str, install: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        skip_or_fail(test, &format!("{name} is not installed ({install})"));
    }
    found
}

/// `test` cannot run here because of `why`: prints `SKIP test: why`, or,
/// under CI, fails the test.
pub fn skip_or_fail(test: &str, why: &str) {
    assert!(
        !in_ci(),
        "{test}: {why}. .ci/run installs it, so under {CI_ENV}=1 this fails instead of skipping"
    );
    eprintln!("SKIP {test}: {why}");
}
