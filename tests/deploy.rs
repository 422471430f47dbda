//! The deployment pieces, checked with the real tools when they are
//! installed: the systemd unit (`systemd-analyze verify` and the `security`
//! exposure score), the unit's credentials against the config loader, and
//! nginx in front of the real binary (`scripts/nginx-proxy-test.sh`).
//! A test whose tool is missing prints why it skipped and passes, except
//! under CI (`STEERHOOK_CI=1`), where `.ci/run` installs the tools and a
//! missing one fails the test. Nothing sleeps to synchronise: the script
//! polls with deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::daemon::{describe, read_repo, repo_path};
use support::tools::{require_tool, skip_or_fail};

const UNIT: &str = "systemd/steerhook.service";
const SYSUSERS: &str = "systemd/steerhook.sysusers";
const INSTALLED_EXEC_START: &str =
    "ExecStart=/usr/bin/steerhook serve --config /etc/steerhook/steerhook.toml";
/// The highest `systemd-analyze security` exposure we accept (0 best, 10 worst).
const MAX_EXPOSURE: f64 = 2.0;
/// `systemd-analyze security --offline=` appeared in systemd 250.
const MIN_SYSTEMD_FOR_OFFLINE: u32 = 250;

/// The unit as shipped, but starting the binary cargo just built, written
/// as `steerhook.service` in a temp dir (verify insists the program exists).
fn unit_pointing_at_built_binary() -> (tempfile::TempDir, PathBuf) {
    let unit = read_repo(UNIT);
    assert!(
        unit.lines().any(|l| l == INSTALLED_EXEC_START),
        "{UNIT} should contain the line `{INSTALLED_EXEC_START}` (the .deb and docs/DEPLOY.md install the binary there)"
    );
    let built = format!(
        "ExecStart={} serve --config /etc/steerhook/steerhook.toml",
        env!("CARGO_BIN_EXE_steerhook")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("steerhook.service");
    std::fs::write(&path, unit.replace(INSTALLED_EXEC_START, &built)).expect("write unit");
    (dir, path)
}

/// "systemd 252 (252.38-1~deb12u1)" -> 252.
fn systemd_version(analyze: &Path) -> Option<u32> {
    let out = Command::new(analyze).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The number in "→ Overall exposure level for steerhook.service: 1.2 OK 🙂".
fn parse_exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn parse_exposure_reads_the_overall_line() {
    let report = "✗ PrivateNetwork=  Service has access to the host's network  0.5\n\
                  → Overall exposure level for steerhook.service: 1.2 OK 🙂\n";
    assert_eq!(parse_exposure(report), Some(1.2));
    assert_eq!(parse_exposure("no summary here"), None);
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = require_tool(
        "systemd_unit_passes_systemd_analyze_verify",
        "systemd-analyze",
        "apt-get install systemd",
    ) else {
        return;
    };
    let (_dir, unit) = unit_pointing_at_built_binary();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    // verify reports problems on stderr, sometimes with exit 0; both count.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("steerhook.service"))
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify rejects {UNIT}:\n{}",
        describe(&out)
    );
}

#[test]
fn systemd_unit_exposure_score_is_at_most_2_0() {
    let test = "systemd_unit_exposure_score_is_at_most_2_0";
    let Some(analyze) = require_tool(test, "systemd-analyze", "apt-get install systemd") else {
        return;
    };
    match systemd_version(&analyze) {
        Some(v) if v >= MIN_SYSTEMD_FOR_OFFLINE => {}
        v => {
            return skip_or_fail(
                test,
                &format!(
                    "systemd {v:?} has no `security --offline=`; need {MIN_SYSTEMD_FOR_OFFLINE}+"
                ),
            )
        }
    }
    let (_dir, unit) = unit_pointing_at_built_binary();
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure = parse_exposure(&report).unwrap_or_else(|| {
        panic!(
            "no overall exposure line in the report:\n{}",
            describe(&out)
        )
    });
    eprintln!("systemd-analyze security --offline=yes {UNIT}: exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "{UNIT} scores {exposure}, above {MAX_EXPOSURE}; the hardening block lost something:\n{report}"
    );
}

/// The credential names the unit loads are the `_file` names the config
/// reads from $CREDENTIALS_DIRECTORY (docs/DEPLOY.md's steerhook.toml).
#[test]
fn unit_credentials_are_the_files_the_config_reads() {
    let unit = read_repo(UNIT);
    let loaded: Vec<(&str, &str)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .filter_map(|v| v.split_once(':'))
        .collect();
    let mut ids: Vec<&str> = loaded.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["opensteer_api_key", "smtp_password", "webhook_secrets"],
        "LoadCredential= ids in {UNIT}"
    );
    for (id, source) in &loaded {
        assert_eq!(
            *source,
            format!("/etc/steerhook/credentials/{id}"),
            "credential {id} should come from /etc/steerhook/credentials"
        );
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).expect("credentials dir");
    std::fs::write(
        creds.join("webhook_secrets"),
        "whsec_deploy_test_one\nwhsec_deploy_test_two\n",
    )
    .expect("write secret");
    std::fs::write(creds.join("opensteer_api_key"), "osk_deploy_test_key\n").expect("write key");
    std::fs::write(creds.join("smtp_password"), "smtp_deploy_test_password\n").expect("write pw");
    let config = dir.path().join("steerhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:8787"
trusted_proxies = ["127.0.0.1"]

[webhook]
secrets_file = "webhook_secrets"

[storage]
path = "{}"

[opensteer]
base_url = "https://api.opensteer.com"
api_key_file = "opensteer_api_key"

[smtp]
host = "localhost"
username = "steerhook"
password_file = "smtp_password"
from = "steerhook <steerhook@localhost>"
"#,
            dir.path().join("steerhook.db").display()
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_steerhook"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("STEERHOOK_CONFIG")
        .output()
        .expect("run steerhook check-config");
    assert!(
        out.status.success(),
        "check-config with the unit's credentials failed:\n{}",
        describe(&out)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("2 configured"),
        "both webhook secrets should be read:\n{all}"
    );
    for secret in [
        "whsec_deploy_test",
        "osk_deploy_test_key",
        "smtp_deploy_test_password",
    ] {
        assert!(
            !all.contains(secret),
            "check-config printed a secret ({secret}):\n{all}"
        );
    }
}

#[test]
fn unit_runs_as_the_user_sysusers_creates() {
    let unit = read_repo(UNIT);
    let user = unit
        .lines()
        .find_map(|l| l.strip_prefix("User="))
        .expect("User= in the unit");
    let sysusers = read_repo(SYSUSERS);
    let created: Vec<&str> = sysusers
        .lines()
        .filter(|l| l.starts_with("u "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(created, [user], "{SYSUSERS} should create the unit's User=");
}

#[test]
fn nginx_proxy_passes_webhooks_byte_for_byte() {
    let test = "nginx_proxy_passes_webhooks_byte_for_byte";
    if require_tool(test, "nginx", "apt-get install nginx").is_none()
        || require_tool(test, "curl", "apt-get install curl").is_none()
    {
        return;
    }
    let out = Command::new("bash")
        .arg(repo_path("scripts/nginx-proxy-test.sh"))
        .env("STEERHOOK_BIN", env!("CARGO_BIN_EXE_steerhook"))
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("run scripts/nginx-proxy-test.sh");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "scripts/nginx-proxy-test.sh failed:\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PASS: steerhook behind nginx"),
        "the script did not reach its end:\n{}",
        describe(&out)
    );
}
