//! The typed settings tree (SPEC §3): the TOML file, then `STEERHOOK__SECTION__KEY`
//! environment overrides, `<key>_file` secrets, and validation that names the key.

mod hooks;
mod raw;
mod summary;
mod validate;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::clock::Clock;
use crate::domain::EventType;
use crate::secret::Secret;
use validate::SecretFiles;

/// The default config path when neither `--config` nor `$STEERHOOK_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/steerhook/steerhook.toml";
/// Default `webhook.tolerance_secs`.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Environment variables holding secrets, and their keys.
const SECRET_ENV: [(&str, &str); 4] = [
    ("STEERHOOK__WEBHOOK__SECRETS", "webhook.secrets"),
    ("STEERHOOK__OPENSTEER__API_KEY", "opensteer.api_key"),
    ("STEERHOOK__SMTP__PASSWORD", "smtp.password"),
    ("STEERHOOK__STORAGE__URL", "storage.url"),
];
/// Keys whose values are secrets: never echoed in an error.
const SECRET_KEYS: [&str; 4] = [
    "webhook.secrets",
    "opensteer.api_key",
    "smtp.password",
    "storage.url",
];
/// Keys of a `[[hook]]` whose values are secrets.
const HOOK_SECRET_KEYS: [&str; 2] = ["secret", "bearer_token"];
/// Largest accepted `webhook.tolerance_secs`.
pub const MAX_TOLERANCE_SECS: u64 = 3600;
/// The webhook secret of the shipped `config.example.toml`: public, so
/// anyone can sign webhooks with it. Fine for the README tour on loopback;
/// `serve` and `doctor` warn when it is used on any other address.
pub const EXAMPLE_WEBHOOK_SECRET: &str = "whsec_example_change_me";

/// A configuration problem, naming the key it is about. Exit code 78.
#[derive(Debug, thiserror::Error)]
#[error("configuration error at `{key}`: {message}")]
pub struct ConfigError {
    /// The dotted key (`server.listen`, `hook[1].command`) or the file.
    pub key: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[server]`
    pub server: ServerSettings,
    /// `[webhook]`
    pub webhook: WebhookSettings,
    /// `[storage]`
    pub storage: StorageSettings,
    /// `[queue]`
    pub queue: QueueSettings,
    /// `[opensteer]`; None: no enrichment.
    pub opensteer: Option<OpensteerSettings>,
    /// `[smtp]`; needed by e-mail hooks.
    pub smtp: Option<SmtpSettings>,
    /// `[log]`
    pub log: LogSettings,
    /// `[[hook]]`, in file order.
    pub hooks: Vec<HookSettings>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Path of the webhook endpoint.
    pub webhook_path: String,
    /// Bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed for logging.
    pub trusted_proxies: Vec<IpAddr>,
    /// HTTP worker threads.
    pub workers: usize,
    /// Time a client has to send the request head.
    pub header_timeout: Duration,
    /// Time a client has to send the whole body.
    pub body_timeout: Duration,
}

/// `[webhook]`
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Accepted secrets (rotation); never empty.
    pub secrets: Vec<Secret>,
    /// `|now - t|` must be at most this.
    pub tolerance_secs: u64,
}

/// SQLite durability level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync at every commit: an answered event survives power loss.
    Full,
    /// WAL + NORMAL: survives a process crash, may lose the last commits on power loss.
    Normal,
}

impl Synchronous {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }
}

/// Which database holds the events and the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// An embedded SQLite file: one daemon.
    #[default]
    Sqlite,
    /// A PostgreSQL server that several daemons may share.
    Postgres,
}

impl StorageBackend {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::Sqlite => "sqlite",
            StorageBackend::Postgres => "postgres",
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Which database.
    pub backend: StorageBackend,
    /// SQLite: the file.
    pub path: PathBuf,
    /// PostgreSQL: a libpq URL, which may hold a password.
    pub url: Option<Secret>,
    /// PostgreSQL: connections this daemon keeps at most.
    pub pool_size: usize,
    /// Where hook payload files go; `None`: beside the SQLite file
    /// (`<path>.payloads`), or `steerhook.payloads` with PostgreSQL.
    pub payload_dir: Option<PathBuf>,
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// `PRAGMA busy_timeout`.
    pub busy_timeout: Duration,
    /// Finished events older than this are pruned.
    pub retention: Duration,
    /// How often `serve` prunes.
    pub prune_interval: Duration,
}

/// `[queue]`
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Jobs run at once, all kinds together.
    pub concurrency: usize,
    /// First retry delay (the cap of the first full-jitter draw).
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Largest wait honoured from an upstream `Retry-After`.
    pub retry_after_max: Duration,
    /// Delay between retries while the API key is rejected.
    pub auth_retry: Duration,
    /// Attempts at fetching a run before giving up and delivering without it.
    pub fetch_max_attempts: u32,
    /// How long a running hook gets to finish when the daemon stops.
    pub shutdown_grace: Duration,
    /// Accept and store events but run no job (maintenance of a downstream system).
    pub paused: bool,
    /// How long a claimed job stays this daemon's without a heartbeat; a
    /// daemon renews its jobs' leases every third of it, so a dead one's
    /// jobs go to others after at most this long.
    pub lease: Duration,
    /// How many steps below the daemon's CPU priority the worker's threads,
    /// and so the hooks they start, run (0-19): the answers come first.
    pub nice: i32,
}

/// `[opensteer]`
#[derive(Debug, Clone)]
pub struct OpensteerSettings {
    /// API base URL.
    pub base_url: String,
    /// `x-api-key`.
    pub api_key: Secret,
    /// `logLimit`.
    pub log_page_size: u32,
    /// Stop paging after this many pages.
    pub max_log_pages: u32,
    /// Stop paging before the stored entries of one event pass this many bytes.
    pub max_log_bytes: u64,
    /// How long after an event's receipt its run is fetched again while the
    /// API has not caught up (404, or a status not yet the event's).
    pub settle: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// API requests in flight at once.
    pub max_concurrent_requests: usize,
}

impl OpensteerSettings {
    /// What the API client is built from.
    pub fn client_settings(&self) -> crate::opensteer::ClientSettings {
        crate::opensteer::ClientSettings {
            base_url: self.base_url.clone(),
            api_key: self.api_key.clone(),
            log_page_size: self.log_page_size,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            max_concurrent_requests: self.max_concurrent_requests,
        }
    }

    /// The API client, reading "now" from `clock`.
    pub fn client(
        &self,
        clock: Arc<dyn Clock>,
    ) -> Result<crate::opensteer::OpensteerClient, crate::opensteer::OpensteerError> {
        crate::opensteer::OpensteerClient::with_clock(self.client_settings(), clock)
    }
}

/// `[smtp]`: the e-mail module's own settings type, so nothing is copied field by field.
pub use crate::hooks::email::{EmailHookSettings, SmtpSecurity, SmtpSettings};
pub use crate::hooks::http::HttpHookSettings;
pub use crate::hooks::shell::ShellHookSettings;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// text | json
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

/// One `[[hook]]`.
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// Unique name.
    pub name: String,
    /// Which events it receives.
    pub events: Vec<EventType>,
    /// Attempts before the delivery is `failed`.
    pub max_attempts: u32,
    /// Deliveries of this hook running at once.
    pub concurrency: usize,
    /// `match`: the runs it is for; `None`: every run of its events.
    pub route: Option<crate::domain::Match>,
    /// What the hook does.
    pub kind: HookKind,
}

/// The kind-specific part of a hook.
#[derive(Debug, Clone)]
pub enum HookKind {
    /// A program started with argv.
    Shell(ShellHookSettings),
    /// An e-mail through `[smtp]`.
    Email(EmailHookSettings),
    /// A POST to an orchestrator's URL.
    Http(HttpHookSettings),
}

impl Settings {
    /// Loads `path`, applies the `STEERHOOK__*` variables of `env`, reads
    /// `_file` secrets (relative to `$CREDENTIALS_DIRECTORY` when set) and validates.
    pub fn load(path: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::load_with(path, env, true)
    }

    /// Like [`Settings::load`], but `<key>_file` secrets are not read (their
    /// values are placeholders): for commands that use no secret.
    pub fn load_without_secret_files(
        path: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        Self::load_with(path, env, false)
    }

    fn load_with(
        path: &Path,
        env: &HashMap<String, String>,
        read_secret_files: bool,
    ) -> Result<Self, ConfigError> {
        let file_key = path.display().to_string();
        if !path.exists() {
            return Err(ConfigError::new(
                file_key,
                "the configuration file does not exist; pass --config PATH or set $STEERHOOK_CONFIG (see config.example.toml)",
            ));
        }
        // Parse once ourselves so that a syntax error is reported without the
        // line's text, which may hold a secret.
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(file_key.clone(), format!("cannot read: {e}")))?;
        check_toml_syntax(&file_key, &text)?;
        let overrides: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("STEERHOOK__") && !SECRET_ENV.iter().any(|(e, _)| e == k)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Secrets bypass try_parsing: an all-digit key must stay a string.
        let mut builder = config::Config::builder();
        for (var, key) in SECRET_ENV {
            if let Some(v) = env.get(var) {
                builder = if key == "webhook.secrets" {
                    let list: Vec<String> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                    builder.set_override(key, list)
                } else {
                    builder.set_override(key, v.clone())
                }
                .map_err(|e| ConfigError::new(key, e.to_string()))?;
            }
        }
        let built = builder
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("STEERHOOK")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("webhook.secrets")
                    .with_list_parse_key("server.trusted_proxies")
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| ConfigError::new(file_key.clone(), e.to_string()))?;
        let tree: serde_json::Value = built
            .try_deserialize()
            .map_err(|e| ConfigError::new(file_key, e.to_string()))?;
        Self::from_value(
            tree,
            env.get("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            read_secret_files,
        )
    }

    /// Parses a TOML document (no environment); for tests and `doctor`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        check_toml_syntax("(file)", text)?;
        let tree: serde_json::Value =
            toml::from_str(text).map_err(|e| ConfigError::new("(file)", e.to_string()))?;
        Self::from_value(tree, None, true)
    }

    fn from_value(
        tree: serde_json::Value,
        credentials_dir: Option<PathBuf>,
        read_secret_files: bool,
    ) -> Result<Self, ConfigError> {
        let raw: raw::RawSettings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let is_secret = SECRET_KEYS
                .iter()
                .any(|k| key == *k || key.starts_with(&format!("{k}[")))
                || (key.starts_with("hook[")
                    && HOOK_SECRET_KEYS.iter().any(|k| key.ends_with(&format!("].{k}"))));
            let message = if inner.starts_with("unknown field") {
                format!("{inner}; remove it or check its spelling")
            } else if is_secret {
                "has the wrong type (webhook.secrets is a list of strings, other secrets are strings); the value is not shown".to_owned()
            } else {
                inner
            };
            ConfigError::new(key, message)
        })?;
        validate::validate(
            raw,
            SecretFiles {
                dir: credentials_dir.as_deref(),
                read: read_secret_files,
            },
        )
    }

    /// The hook named `name`.
    pub fn hook(&self, name: &str) -> Option<&HookSettings> {
        self.hooks.iter().find(|h| h.name == name)
    }

    /// Whether `webhook.secrets` holds [`EXAMPLE_WEBHOOK_SECRET`].
    pub fn uses_example_secret(&self) -> bool {
        self.webhook
            .secrets
            .iter()
            .any(|s| s.expose() == EXAMPLE_WEBHOOK_SECRET)
    }

    /// Whether the example secret is in use where others can reach the
    /// daemon: `server.listen` is not a loopback address.
    pub fn example_secret_exposed(&self) -> bool {
        self.uses_example_secret() && !self.server.listen.ip().is_loopback()
    }
}

/// Reports a TOML syntax error by line and column only: the library's own
/// message quotes the line, which may hold a secret.
fn check_toml_syntax(file_key: &str, text: &str) -> Result<(), ConfigError> {
    match toml::from_str::<toml::Value>(text) {
        Ok(_) => Ok(()),
        Err(e) => {
            let at = e.span().map_or(String::new(), |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" at line {line}, column {col}")
            });
            Err(ConfigError::new(
                file_key,
                format!("TOML syntax error{at}: {}", e.message().trim()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[server]\nlisten = \"127.0.0.1:0\"\n[webhook]\nsecrets = [\"whsec_a\"]\n";

    #[test]
    fn minimal_config_gets_the_defaults() {
        let s = Settings::from_toml(MINIMAL).unwrap();
        assert_eq!(s.server.webhook_path, "/webhooks/opensteer");
        assert_eq!(s.server.max_body_bytes, 1_048_576);
        assert_eq!(s.webhook.tolerance_secs, 300);
        assert_eq!(s.storage.synchronous, Synchronous::Full);
        assert!(s.opensteer.is_none());
        assert_eq!(
            s.queue.nice, 10,
            "the worker yields to the answers unless told"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"\n[webhook]\nsecrets=[\"a\"]", "server.listen"),
            ("[server]\nlisten = \"127.0.0.1:0\"\n", "webhook.secrets"),
            (&format!("{MINIMAL}tolerance_secs = 0\n"), "webhook.tolerance_secs"),
            (&format!("{MINIMAL}tolerance_secs = 3601\n"), "webhook.tolerance_secs"),
            (&format!("{MINIMAL}bogus = 1\n"), "webhook.bogus"),
            (&format!("{MINIMAL}[storage]\npaht = \"x\"\n"), "storage.paht"),
            (&format!("{MINIMAL}[queue]\nnice = 20\n"), "queue.nice"),
            (
                &format!("{MINIMAL}[[hook]]\nname=\"a\"\nkind=\"shell\"\nevents=[\"run.failed\"]\ncommand=[\"/bin/true\"]\n[[hook]]\nname=\"a\"\nkind=\"shell\"\nevents=[\"run.failed\"]\ncommand=[\"/bin/true\"]\n"),
                "hook[1].name",
            ),
            (
                &format!("{MINIMAL}[[hook]]\nname=\"a\"\nkind=\"shell\"\nevents=[\"run.nope\"]\ncommand=[\"/bin/true\"]\n"),
                "hook[0].events[0]",
            ),
        ];
        for (text, key) in cases {
            let err = Settings::from_toml(text).expect_err(text);
            assert_eq!(err.key, key, "config {text:?} gave {err}");
        }
    }

    const HTTP_HOOK: &str = "[[hook]]\nname = \"airflow\"\nkind = \"http\"\nevents = [\"run.succeeded\"]\nurl = \"https://airflow.internal/api/v1/dags/load/dagRuns\"\n";
    const SIGNING_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    #[test]
    fn http_hook_errors_name_the_key() {
        let shell = "[[hook]]\nname=\"a\"\nkind=\"shell\"\nevents=[\"run.failed\"]\ncommand=[\"/bin/true\"]\n";
        let cases = [
            (
                format!("{HTTP_HOOK}headers = {{ Authorization = \"Bearer x\" }}\n"),
                "hook[0].headers.Authorization",
            ),
            (
                format!("{HTTP_HOOK}headers = {{ \"X Bad\" = \"x\" }}\n"),
                "hook[0].headers.X Bad",
            ),
            (
                format!("{HTTP_HOOK}secret = \"not base64!\"\n"),
                "hook[0].secret",
            ),
            (
                format!("{HTTP_HOOK}secret = \"{SIGNING_SECRET}\"\nsecret_file = \"s\"\n"),
                "hook[0].secret_file",
            ),
            (
                format!("{HTTP_HOOK}bearer_token = \"a\\nb\"\n"),
                "hook[0].bearer_token",
            ),
            (format!("{HTTP_HOOK}body = \"logs\"\n"), "hook[0].body"),
            (format!("{HTTP_HOOK}body_key = \"\"\n"), "hook[0].body_key"),
            (
                format!("{HTTP_HOOK}timeout_secs = 0\n"),
                "hook[0].timeout_secs",
            ),
            (
                format!("{HTTP_HOOK}command = [\"/bin/true\"]\n"),
                "hook[0].command",
            ),
            (
                HTTP_HOOK.replace("url = \"https://", "url = \"ftp://"),
                "hook[0].url",
            ),
            (
                HTTP_HOOK.replace("https://airflow", "https://user:pw@airflow"),
                "hook[0].url",
            ),
            (
                HTTP_HOOK
                    .lines()
                    .filter(|l| !l.starts_with("url"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                "hook[0].url",
            ),
            (format!("{shell}url = \"https://x.test/\"\n"), "hook[0].url"),
        ];
        for (hook, key) in cases {
            let text = format!("{MINIMAL}{hook}");
            let err = Settings::from_toml(&text).expect_err(&text);
            assert_eq!(err.key, key, "config {text:?} gave {err}");
            assert!(!err.message.contains("pw"), "{err}");
        }
    }

    #[test]
    fn http_hook_secrets_never_appear_in_errors_or_the_summary() {
        let text = format!("{MINIMAL}{HTTP_HOOK}secret = 12345678\n");
        let err = Settings::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "hook[0].secret");
        assert!(!err.to_string().contains("12345678"), "{err}");

        let text = format!(
            "{MINIMAL}{HTTP_HOOK}secret = \"{SIGNING_SECRET}\"\nbearer_token = \"tok_very_secret\"\nheaders = {{ \"X-Source\" = \"steerhook\" }}\nbody_key = \"conf\"\n"
        );
        let settings = Settings::from_toml(&text).unwrap();
        let summary = settings.summary();
        assert!(
            summary.contains("http POST https://airflow.internal/api/v1/dags/load/dagRuns (document, under \"conf\", signed [redacted], bearer token [redacted], headers x-source, timeout 30 s)"),
            "{summary}"
        );
        for secret in ["tok_very_secret", "C2FVsBQIhrscChlQIMV"] {
            assert!(!summary.contains(secret), "{summary}");
            assert!(
                !format!("{settings:?}").contains(secret),
                "Debug shows {secret}"
            );
        }
    }

    #[test]
    fn each_hook_kind_has_its_own_default_timeout() {
        let shell = "[[hook]]\nname=\"a\"\nkind=\"shell\"\nevents=[\"run.failed\"]\ncommand=[\"/bin/true\"]\n";
        let s = Settings::from_toml(&format!("{MINIMAL}{HTTP_HOOK}{shell}")).unwrap();
        match (&s.hooks[0].kind, &s.hooks[1].kind) {
            (HookKind::Http(http), HookKind::Shell(sh)) => {
                assert_eq!(http.timeout, Duration::from_secs(30));
                assert_eq!(sh.timeout, Duration::from_secs(900));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http_hook_reads_its_token_and_secret_files_from_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("airflow_token"), "tok_from_file\n").unwrap();
        std::fs::write(
            dir.path().join("airflow_secret"),
            format!("{SIGNING_SECRET}\n"),
        )
        .unwrap();
        let path = dir.path().join("steerhook.toml");
        std::fs::write(
            &path,
            format!("{MINIMAL}{HTTP_HOOK}bearer_token_file = \"airflow_token\"\nsecret_file = \"airflow_secret\"\nheaders = {{ \"X-Source\" = \"steerhook\" }}\n"),
        )
        .unwrap();
        let env = HashMap::from([(
            "CREDENTIALS_DIRECTORY".to_owned(),
            dir.path().display().to_string(),
        )]);
        let s = Settings::load(&path, &env).unwrap();
        let HookKind::Http(http) = &s.hooks[0].kind else {
            panic!("{:?}", s.hooks[0].kind)
        };
        assert_eq!(
            http.bearer_token.as_ref().map(Secret::expose),
            Some("tok_from_file")
        );
        assert!(http.signing_key.is_some());
        assert_eq!(http.headers["x-source"], "steerhook");
        // Commands that send nothing load without reading them.
        std::fs::remove_file(dir.path().join("airflow_secret")).unwrap();
        assert!(Settings::load_without_secret_files(&path, &env).is_ok());
        let err = Settings::load(&path, &env).unwrap_err();
        assert_eq!(err.key, "hook[0].secret_file");
    }

    #[test]
    fn the_commented_http_hook_of_the_example_config_is_valid() {
        let example = include_str!("../../config.example.toml");
        let block = example
            .split("\n\n")
            .find(|b| b.contains("# kind = \"http\""))
            .expect("an http hook in config.example.toml");
        let hook: String = block
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steerhook.toml");
        std::fs::write(&path, format!("{MINIMAL}{hook}")).unwrap();
        let s = Settings::load_without_secret_files(&path, &HashMap::new())
            .unwrap_or_else(|e| panic!("{e}\n{hook}"));
        let HookKind::Http(http) = &s.hooks[0].kind else {
            panic!("{:?}", s.hooks[0].kind)
        };
        assert_eq!(http.body_key.as_deref(), Some("conf"));
        assert_eq!(s.hooks[0].max_attempts, 8);
    }

    const SHELL_HOOK: &str = "[[hook]]\nname=\"etl\"\nkind=\"shell\"\nevents=[\"run.succeeded\"]\ncommand=[\"/bin/true\"]\n";

    #[test]
    fn a_bad_match_is_a_configuration_error_naming_the_pointer() {
        for (entry, key, why) in [
            (
                "\"run/scraper\" = \"x\"",
                "hook[0].match.run/scraper",
                "RFC 6901",
            ),
            ("\"/run/a~2\" = \"x\"", "hook[0].match./run/a~2", "~0"),
            ("\"/run/pages\" = 3", "hook[0].match./run/pages", "\"3\""),
            (
                "\"/run/tags\" = [\"a\", 1]",
                "hook[0].match./run/tags",
                "list of strings",
            ),
            ("\"/run/tags\" = []", "hook[0].match./run/tags", "no value"),
            ("\"/scraper\" = \"x\"", "hook[0].match./scraper", "/run"),
        ] {
            let text = format!("{MINIMAL}{SHELL_HOOK}match = {{ {entry} }}\n");
            let err = Settings::from_toml(&text).expect_err(&text);
            assert_eq!(err.key, key, "{entry}: {err}");
            assert!(err.message.contains(why), "{entry}: {err}");
        }
        let err = Settings::from_toml(&format!("{MINIMAL}{SHELL_HOOK}match = {{}}\n")).unwrap_err();
        assert_eq!(err.key, "hook[0].match");
    }

    #[test]
    fn match_pointers_keep_their_case_dots_and_escapes_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steerhook.toml");
        std::fs::write(
            &path,
            format!("{MINIMAL}{SHELL_HOOK}match = {{ \"/run/scraperName\" = \"Products\", \"/event/payload/data.v2/a~1b\" = [\"x\", \"y\"] }}\n{HTTP_HOOK}match = {{ \"/event/type\" = \"run.succeeded\" }}\n"),
        )
        .unwrap();
        let s = Settings::load(&path, &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let route = |i: usize| s.hooks[i].route.as_ref().map(ToString::to_string);
        assert_eq!(
            route(0).as_deref(),
            Some("/event/payload/data.v2/a~1b = x | y, /run/scraperName = Products")
        );
        assert_eq!(
            route(1).as_deref(),
            Some("/event/type = run.succeeded"),
            "any kind"
        );
        assert!(
            s.summary().contains(
                "only runs where /event/payload/data.v2/a~1b = x | y, /run/scraperName = Products"
            ),
            "{}",
            s.summary()
        );
    }

    #[test]
    fn the_example_secret_is_the_one_config_example_toml_ships_and_only_loopback_is_quiet() {
        assert!(include_str!("../../config.example.toml")
            .contains(&format!("\"{EXAMPLE_WEBHOOK_SECRET}\"")));
        let with = |listen: &str| {
            Settings::from_toml(&format!(
                "[server]\nlisten = \"{listen}\"\n[webhook]\nsecrets = [\"whsec_mine\", \"{EXAMPLE_WEBHOOK_SECRET}\"]\n"
            ))
            .unwrap()
        };
        assert!(!with("127.0.0.1:8787").example_secret_exposed());
        assert!(!with("[::1]:8787").example_secret_exposed());
        assert!(with("0.0.0.0:8787").example_secret_exposed());
        assert!(with("192.0.2.10:8787").example_secret_exposed());
        assert!(!Settings::from_toml(MINIMAL).unwrap().uses_example_secret());
    }

    #[test]
    fn the_commented_match_of_the_example_config_is_valid() {
        let example = include_str!("../../config.example.toml");
        let line = example
            .lines()
            .find(|l| l.starts_with("# match = "))
            .expect("a commented match in config.example.toml");
        let text = format!("{MINIMAL}{SHELL_HOOK}{}\n", &line[2..]);
        let s = Settings::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            s.hooks[0]
                .route
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("/run/scraper = products")
        );
    }

    #[test]
    fn unknown_key_message_names_the_field() {
        let err = Settings::from_toml(&format!("{MINIMAL}bogus = 1\n")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn storage_settings_name_the_key_for_each_backend_mistake() {
        let cases = [
            ("[storage]\nbackend = \"postgres\"\n", "storage.url"),
            (
                "[storage]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db\"\npath = \"x.db\"\n",
                "storage.path",
            ),
            ("[storage]\nurl = \"postgres://u@h/db\"\n", "storage.url"),
            (
                "[storage]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@h/db?sslmode=require\"\n",
                "storage.url",
            ),
            ("[storage]\nbackend = \"postgres\"\nurl = \"not a url at all\"\n", "storage.url"),
            ("[storage]\nbackend = \"mysql\"\n", "storage.backend"),
        ];
        for (storage, key) in cases {
            let text = format!("{MINIMAL}{storage}");
            let err = Settings::from_toml(&text).expect_err(&text);
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(
                !err.to_string().contains("hunter2"),
                "the password leaked: {err}"
            );
        }
    }

    #[test]
    fn a_postgres_summary_hides_the_password() {
        let s = Settings::from_toml(&format!(
            "{MINIMAL}[storage]\nbackend = \"postgres\"\nurl = \"postgres://steerhook:hunter2@db.internal:5432/steerhook\"\n"
        ))
        .unwrap();
        let summary = s.summary();
        assert!(
            summary.contains("postgres postgres://steerhook:[redacted]@db.internal:5432/steerhook"),
            "{summary}"
        );
        assert!(!summary.contains("hunter2"), "{summary}");
        assert!(!format!("{s:?}").contains("hunter2"), "Debug leaks it");
    }
}
