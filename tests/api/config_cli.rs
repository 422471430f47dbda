//! SPEC §2/§3 through the real binary: `check-config` and `serve` with bad
//! configurations exit 78 naming the key; secrets never print.

use std::path::Path;
use std::process::Output;

use crate::support::prelude::*;

const CONFIG_SECRET: &str = "whsec_must_never_be_printed_4242";

/// A valid configuration with `extra` lines appended to `[webhook]` and
/// `tail` after everything else.
fn config_text(dir: &Path, listen: &str, webhook: &str, tail: &str) -> String {
    format!(
        "[server]\nlisten = {}\n[webhook]\n{webhook}\n[storage]\npath = {}\n{tail}\n",
        toml_str(listen),
        toml_str(&dir.join("steerhook.db").display().to_string()),
    )
}

fn secrets_line() -> String {
    format!("secrets = [{}]", toml_str(CONFIG_SECRET))
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `check-config` and asserts exit 78 with `key` named on stderr and no secret shown.
fn assert_config_error(text_of_config: &str, env: &[(&str, &str)], key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_file(dir.path(), text_of_config);
    let out = run_cli(&path, &["check-config"], env);
    let shown = text(&out);
    assert_eq!(
        out.status.code(),
        Some(78),
        "config:\n{text_of_config}\n{shown}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(key),
        "the error names {key}:\n{shown}"
    );
    assert!(
        !shown.contains(CONFIG_SECRET),
        "a secret was printed:\n{shown}"
    );
}

const SHELL_HOOK: &str =
    "kind = \"shell\"\nevents = [\"run.succeeded\"]\ncommand = [\"/bin/true\"]\n";

#[test]
fn check_config_exits_78_naming_the_key_for_each_invalid_configuration() {
    let d = Path::new("/tmp/unused");
    let s = secrets_line();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "listen unparsable",
            config_text(d, "localhost-ish", &s, ""),
            "server.listen",
        ),
        (
            "no secrets",
            config_text(d, "127.0.0.1:0", "", ""),
            "webhook.secrets",
        ),
        (
            "tolerance 0",
            config_text(d, "127.0.0.1:0", &format!("{s}\ntolerance_secs = 0"), ""),
            "webhook.tolerance_secs",
        ),
        (
            "tolerance 3601",
            config_text(d, "127.0.0.1:0", &format!("{s}\ntolerance_secs = 3601"), ""),
            "webhook.tolerance_secs",
        ),
        (
            "unknown key",
            config_text(d, "127.0.0.1:0", &format!("{s}\nsecretz = [\"x\"]"), ""),
            "secretz",
        ),
        (
            "duplicate hook names",
            config_text(
                d,
                "127.0.0.1:0",
                &s,
                &format!(
                    "[[hook]]\nname = \"etl\"\n{SHELL_HOOK}[[hook]]\nname = \"etl\"\n{SHELL_HOOK}"
                ),
            ),
            "hook[1].name",
        ),
        (
            "secrets_file missing",
            config_text(
                d,
                "127.0.0.1:0",
                "secrets_file = \"/nonexistent/steerhook/secrets\"",
                "",
            ),
            "webhook.secrets_file",
        ),
        (
            "api_key_file missing",
            config_text(
                d,
                "127.0.0.1:0",
                &s,
                "[opensteer]\napi_key_file = \"/nonexistent/steerhook/api_key\"",
            ),
            "opensteer.api_key_file",
        ),
    ];
    for (what, text_of_config, key) in cases {
        eprintln!("case: {what}");
        assert_config_error(&text_of_config, &[], key);
    }
}

#[test]
fn check_config_exits_78_when_the_file_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(&dir.path().join("absent.toml"), &["check-config"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));
}

#[test]
fn check_config_accepts_a_valid_file_and_redacts_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let api_key = "osk_also_never_printed_777";
    let text_of_config = config_text(
        dir.path(),
        "127.0.0.1:8787",
        &secrets_line(),
        &format!(
            "[opensteer]\napi_key = {}\n[[hook]]\nname = \"etl\"\n{SHELL_HOOK}",
            toml_str(api_key)
        ),
    );
    let path = write_config_file(dir.path(), &text_of_config);
    let out = run_cli(&path, &["check-config"], &[]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("127.0.0.1:8787"), "a summary: {shown}");
    assert!(shown.contains("etl"), "the hook is listed: {shown}");
    assert!(
        !shown.contains(CONFIG_SECRET),
        "webhook secret shown: {shown}"
    );
    assert!(!shown.contains(api_key), "api key shown: {shown}");
}

#[test]
fn serve_exits_78_naming_the_key_on_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(
        dir.path(),
        "127.0.0.1:0",
        &format!("{}\ntolerance_secs = 0", secrets_line()),
        "",
    );
    let path = write_config_file(dir.path(), &text_of_config);
    let out = run_cli(&path, &["serve"], &[]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(78), "{shown}");
    assert!(shown.contains("webhook.tolerance_secs"), "{shown}");
    assert!(!shown.contains(CONFIG_SECRET), "{shown}");
}

#[test]
fn an_environment_override_is_validated_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(dir.path(), "127.0.0.1:0", &secrets_line(), "");
    assert_config_error(
        &text_of_config,
        &[("STEERHOOK__SERVER__LISTEN", "bogus")],
        "server.listen",
    );
}

#[test]
fn an_environment_override_replaces_the_file_value() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(dir.path(), "127.0.0.1:0", &secrets_line(), "");
    let path = write_config_file(dir.path(), &text_of_config);
    let out = run_cli(
        &path,
        &["check-config"],
        &[
            ("STEERHOOK__SERVER__LISTEN", "127.0.0.1:9911"),
            ("STEERHOOK__WEBHOOK__TOLERANCE_SECS", "60"),
        ],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("127.0.0.1:9911"), "{shown}");
    assert!(shown.contains("tolerance 60 s"), "{shown}");
}

#[test]
fn a_relative_secrets_file_is_read_from_the_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(
        creds.join("webhook_secrets"),
        format!("{CONFIG_SECRET}\nwhsec_second_never_printed\n"),
    )
    .unwrap();
    let text_of_config = config_text(
        dir.path(),
        "127.0.0.1:0",
        "secrets_file = \"webhook_secrets\"",
        "",
    );
    let path = write_config_file(dir.path(), &text_of_config);
    let out = run_cli(
        &path,
        &["check-config"],
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("2 configured"), "two secrets read: {shown}");
    assert!(!shown.contains(CONFIG_SECRET), "{shown}");
    assert!(!shown.contains("whsec_second_never_printed"), "{shown}");

    // Without $CREDENTIALS_DIRECTORY the relative path is not found: 78.
    let out = run_cli(&path, &["check-config"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhook.secrets_file"));
}

/// A secret given with the wrong TOML type must not be echoed back by the
/// deserialiser's "invalid type" message.
#[test]
fn a_mistyped_secret_is_not_echoed_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(
        dir.path(),
        "127.0.0.1:0",
        &format!("secrets = {}", toml_str(CONFIG_SECRET)),
        "",
    );
    assert_config_error(&text_of_config, &[], "webhook.secrets");
}

/// An API key that happens to be all digits, given in the environment, is a
/// string like any other: not parsed as a number, and never printed.
#[test]
fn an_all_digit_secret_from_the_environment_is_accepted_and_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(
        dir.path(),
        "127.0.0.1:0",
        &secrets_line(),
        "[opensteer]\napi_key = \"osk_placeholder\"",
    );
    let path = write_config_file(dir.path(), &text_of_config);
    let digits = "918273645546372819";
    let out = run_cli(
        &path,
        &["check-config"],
        &[("STEERHOOK__OPENSTEER__API_KEY", digits)],
    );
    let shown = text(&out);
    assert!(!shown.contains(digits), "the API key was printed:\n{shown}");
    assert_eq!(out.status.code(), Some(0), "{shown}");
}

/// Hook environment variable names keep their case through the config
/// layers (the `config` crate must not lowercase them).
#[test]
fn hook_env_names_keep_their_case_through_settings_load() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(
        dir.path(),
        "127.0.0.1:0",
        &secrets_line(),
        &format!("[[hook]]\nname = \"etl\"\n{SHELL_HOOK}env = {{ ETL_TARGET = \"prod\" }}\n"),
    );
    let path = write_config_file(dir.path(), &text_of_config);
    let settings = steerhook::config::Settings::load(&path, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let steerhook::config::HookKind::Shell(shell) = &settings.hooks[0].kind else {
        panic!("a shell hook");
    };
    let names: Vec<&str> = shell.env.keys().map(String::as_str).collect();
    assert_eq!(names, ["ETL_TARGET"]);
}

#[test]
fn webhook_secrets_from_the_environment_are_a_comma_separated_list() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(dir.path(), "127.0.0.1:0", &secrets_line(), "");
    let path = write_config_file(dir.path(), &text_of_config);
    let out = run_cli(
        &path,
        &["check-config"],
        &[("STEERHOOK__WEBHOOK__SECRETS", "whsec_env_one,whsec_env_two")],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("2 configured"), "{shown}");
    assert!(!shown.contains("whsec_env_"), "{shown}");
}

/// A TOML syntax error on a secret's line must not quote that line.
#[test]
fn a_toml_syntax_error_does_not_quote_a_secret() {
    let text_of_config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[webhook]\nsecrets = [{} \"x\"]\n",
        toml_str(CONFIG_SECRET)
    );
    assert_config_error(&text_of_config, &[], "line 4");
}

/// `check-config` writes each value as the file does: no `Some(..)`, no
/// `None`, no Rust variant names (`Full`, `Starttls`).
#[test]
fn check_config_prints_every_value_as_a_user_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let text_of_config = config_text(
        dir.path(),
        "127.0.0.1:8787",
        &secrets_line(),
        "[opensteer]\napi_key = \"osk_x\"\n\
         [smtp]\nhost = \"mail.internal\"\nport = 587\nsecurity = \"starttls\"\nusername = \"steerhook\"\npassword = \"pw_never_shown\"\n\
         [[hook]]\nname = \"etl\"\nkind = \"shell\"\nevents = [\"run.succeeded\"]\ncommand = [\"/bin/true\"]\n\
         match = { \"/run/scraper\" = [\"products\", \"prices\"] }\n\
         [[hook]]\nname = \"ops-mail\"\nkind = \"email\"\nevents = [\"run.failed\"]\nto = [\"ops@example.com\"]\n\
         [[hook]]\nname = \"airflow\"\nkind = \"http\"\nevents = [\"run.succeeded\"]\nurl = \"https://airflow.internal/api\"\n",
    );
    let path = write_config_file(dir.path(), &text_of_config);
    let out = run_cli(&path, &["check-config"], &[]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for written in [
        "synchronous=full",
        "security starttls, with login",
        "only runs where /run/scraper = products | prices",
    ] {
        assert!(shown.contains(written), "{written} in:\n{shown}");
    }
    for debug in [
        "Some(",
        "None",
        "Full",
        "Starttls",
        "Sqlite",
        "Document",
        "pw_never_shown",
    ] {
        assert!(!shown.contains(debug), "{debug} in:\n{shown}");
    }
}

#[test]
fn a_match_pointer_that_is_not_rfc_6901_exits_78_naming_it() {
    let d = Path::new("/tmp/unused");
    assert_config_error(
        &config_text(
            d,
            "127.0.0.1:0",
            &secrets_line(),
            &format!("[[hook]]\nname = \"etl\"\n{SHELL_HOOK}match = {{ \"run/scraper\" = \"products\" }}\n"),
        ),
        &[],
        "hook[0].match.run/scraper",
    );
}
