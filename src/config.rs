//! The typed settings tree (SPEC §3): the TOML file, then `STEERHOOK__SECTION__KEY`
//! environment overrides, `<key>_file` secrets, and validation that names the key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::EventType;
use crate::secret::Secret;

/// The default config path when neither `--config` nor `$STEERHOOK_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/steerhook/steerhook.toml";
/// Default `webhook.tolerance_secs`.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Environment variables holding secrets, and their keys.
const SECRET_ENV: [(&str, &str); 3] = [
    ("STEERHOOK__WEBHOOK__SECRETS", "webhook.secrets"),
    ("STEERHOOK__OPENSTEER__API_KEY", "opensteer.api_key"),
    ("STEERHOOK__SMTP__PASSWORD", "smtp.password"),
];
/// Keys whose values are secrets: never echoed in an error.
const SECRET_KEYS: [&str; 3] = ["webhook.secrets", "opensteer.api_key", "smtp.password"];
/// Largest accepted `webhook.tolerance_secs`.
pub const MAX_TOLERANCE_SECS: u64 = 3600;

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
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
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

/// `[storage]`
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The SQLite file.
    pub path: PathBuf,
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
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// API requests in flight at once.
    pub max_concurrent_requests: usize,
}

/// `[smtp]`: the e-mail module's own settings type, so nothing is copied field by field.
pub use crate::hooks::email::{EmailHookSettings, SmtpSecurity, SmtpSettings};
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
}

// ---- raw, as written in the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: RawServer,
    #[serde(default)]
    webhook: RawWebhook,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    queue: RawQueue,
    opensteer: Option<RawOpensteer>,
    smtp: Option<RawSmtp>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    hook: Vec<RawHook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    #[serde(default = "d_webhook_path")]
    webhook_path: String,
    #[serde(default = "d_max_body")]
    max_body_bytes: u64,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default = "d_workers")]
    workers: u64,
    #[serde(default = "d_header_timeout")]
    header_timeout_ms: u64,
    #[serde(default = "d_body_timeout")]
    body_timeout_ms: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    #[serde(default)]
    secrets: Vec<String>,
    secrets_file: Option<String>,
    tolerance_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "d_db_path")]
    path: PathBuf,
    #[serde(default = "d_sync")]
    synchronous: Synchronous,
    #[serde(default = "d_busy")]
    busy_timeout_ms: u64,
    #[serde(default = "d_retention_days")]
    retention_days: u64,
    #[serde(default = "d_prune_interval")]
    prune_interval_secs: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            path: d_db_path(),
            synchronous: d_sync(),
            busy_timeout_ms: d_busy(),
            retention_days: d_retention_days(),
            prune_interval_secs: d_prune_interval(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    #[serde(default = "d_concurrency")]
    concurrency: u64,
    #[serde(default = "d_backoff_base")]
    backoff_base_secs: u64,
    #[serde(default = "d_backoff_max")]
    backoff_max_secs: u64,
    #[serde(default = "d_retry_after_max")]
    retry_after_max_secs: u64,
    #[serde(default = "d_auth_retry")]
    auth_retry_secs: u64,
    #[serde(default = "d_fetch_attempts")]
    fetch_max_attempts: u32,
    #[serde(default = "d_shutdown_grace")]
    shutdown_grace_secs: u64,
    #[serde(default)]
    paused: bool,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            concurrency: d_concurrency(),
            backoff_base_secs: d_backoff_base(),
            backoff_max_secs: d_backoff_max(),
            retry_after_max_secs: d_retry_after_max(),
            auth_retry_secs: d_auth_retry(),
            fetch_max_attempts: d_fetch_attempts(),
            shutdown_grace_secs: d_shutdown_grace(),
            paused: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpensteer {
    #[serde(default = "d_base_url")]
    base_url: String,
    api_key: Option<String>,
    api_key_file: Option<String>,
    #[serde(default = "d_page_size")]
    log_page_size: u32,
    #[serde(default = "d_max_pages")]
    max_log_pages: u32,
    #[serde(default = "d_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "d_request_timeout")]
    request_timeout_secs: u64,
    #[serde(default = "d_api_concurrency")]
    max_concurrent_requests: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    #[serde(default = "d_smtp_host")]
    host: String,
    #[serde(default = "d_smtp_port")]
    port: u16,
    #[serde(default = "d_smtp_security")]
    security: SmtpSecurity,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    #[serde(default = "d_smtp_from")]
    from: String,
    #[serde(default = "d_smtp_timeout")]
    timeout_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "d_log_format")]
    format: LogFormat,
    #[serde(default = "d_log_level")]
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: d_log_format(),
            level: d_log_level(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    name: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default = "d_max_attempts")]
    max_attempts: u32,
    #[serde(default = "d_hook_concurrency")]
    concurrency: u64,
    // shell
    command: Option<Vec<String>>,
    working_dir: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_passthrough: Vec<String>,
    #[serde(default = "d_hook_timeout")]
    timeout_secs: u64,
    #[serde(default = "d_kill_grace")]
    kill_grace_secs: u64,
    #[serde(default = "d_max_output")]
    max_output_bytes: u64,
    // email
    to: Option<Vec<String>>,
    subject: Option<String>,
    #[serde(default = "d_log_lines")]
    log_lines: u64,
}

fn d_webhook_path() -> String {
    "/webhooks/opensteer".into()
}
fn d_max_body() -> u64 {
    1_048_576
}
/// One HTTP worker per CPU this process may run on (its affinity mask, so a
/// daemon pinned to one core gets one: a second worker there only adds
/// context switches), 2 if that cannot be read.
fn d_workers() -> u64 {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(64) as u64)
}
fn d_header_timeout() -> u64 {
    5_000
}
fn d_body_timeout() -> u64 {
    10_000
}
fn d_db_path() -> PathBuf {
    "steerhook.db".into()
}
fn d_sync() -> Synchronous {
    Synchronous::Full
}
fn d_busy() -> u64 {
    5_000
}
fn d_retention_days() -> u64 {
    30
}
fn d_prune_interval() -> u64 {
    3_600
}
fn d_concurrency() -> u64 {
    8
}
fn d_backoff_base() -> u64 {
    5
}
fn d_backoff_max() -> u64 {
    3_600
}
fn d_retry_after_max() -> u64 {
    3_600
}
fn d_auth_retry() -> u64 {
    300
}
fn d_fetch_attempts() -> u32 {
    50
}
fn d_shutdown_grace() -> u64 {
    10
}
fn d_base_url() -> String {
    "https://api.opensteer.com".into()
}
fn d_page_size() -> u32 {
    200
}
fn d_max_pages() -> u32 {
    100
}
fn d_connect_timeout() -> u64 {
    5
}
fn d_request_timeout() -> u64 {
    30
}
fn d_api_concurrency() -> u64 {
    4
}
fn d_smtp_host() -> String {
    "localhost".into()
}
fn d_smtp_port() -> u16 {
    25
}
fn d_smtp_security() -> SmtpSecurity {
    SmtpSecurity::None
}
fn d_smtp_from() -> String {
    "steerhook <steerhook@localhost>".into()
}
fn d_smtp_timeout() -> u64 {
    30
}
fn d_log_format() -> LogFormat {
    LogFormat::Text
}
fn d_log_level() -> String {
    "info".into()
}
fn d_max_attempts() -> u32 {
    5
}
fn d_hook_concurrency() -> u64 {
    1
}
fn d_hook_timeout() -> u64 {
    900
}
fn d_kill_grace() -> u64 {
    10
}
fn d_max_output() -> u64 {
    65_536
}
fn d_log_lines() -> u64 {
    20
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
        let raw: RawSettings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let is_secret = SECRET_KEYS
                .iter()
                .any(|k| key == *k || key.starts_with(&format!("{k}[")));
            let message = if inner.starts_with("unknown field") {
                format!("{inner}; remove it or check its spelling")
            } else if is_secret {
                "has the wrong type (webhook.secrets is a list of strings, other secrets are strings); the value is not shown".to_owned()
            } else {
                inner
            };
            ConfigError::new(key, message)
        })?;
        validate(
            raw,
            SecretFiles {
                dir: credentials_dir.as_deref(),
                read: read_secret_files,
            },
        )
    }

    /// A summary for `check-config`, with secrets counted, never shown.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "listen            {}", self.server.listen);
        let _ = writeln!(s, "webhook path      {}", self.server.webhook_path);
        let _ = writeln!(s, "max body          {} bytes", self.server.max_body_bytes);
        let _ = writeln!(
            s,
            "webhook secrets   {} configured [redacted], tolerance {} s",
            self.webhook.secrets.len(),
            self.webhook.tolerance_secs
        );
        let _ = writeln!(
            s,
            "database          {} (synchronous={:?}, retention {} days)",
            self.storage.path.display(),
            self.storage.synchronous,
            self.storage.retention.as_secs() / 86_400
        );
        match &self.opensteer {
            Some(o) => {
                let _ = writeln!(
                    s,
                    "opensteer         {} (api key [redacted], logLimit {}, max {} pages)",
                    o.base_url, o.log_page_size, o.max_log_pages
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "opensteer         not configured: hooks get the webhook payload only"
                );
            }
        }
        if let Some(m) = &self.smtp {
            let _ = writeln!(
                s,
                "smtp              {}:{} ({:?}{})",
                m.host,
                m.port,
                m.security,
                if m.username.is_some() {
                    ", with login"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(s, "hooks             {}", self.hooks.len());
        for h in &self.hooks {
            let events: Vec<_> = h.events.iter().map(|e| e.as_str()).collect();
            let what = match &h.kind {
                HookKind::Shell(sh) => format!("shell {}", sh.command.join(" ")),
                HookKind::Email(e) => format!("email to {}", e.to.join(", ")),
            };
            let _ = writeln!(
                s,
                "  {:<15} {} on {} (max {} attempts)",
                h.name,
                what,
                events.join(", "),
                h.max_attempts
            );
        }
        s
    }

    /// The hook named `name`.
    pub fn hook(&self, name: &str) -> Option<&HookSettings> {
        self.hooks.iter().find(|h| h.name == name)
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

/// How `<key>_file` secrets are handled while loading.
#[derive(Debug, Clone, Copy)]
struct SecretFiles<'a> {
    /// `$CREDENTIALS_DIRECTORY`, for relative paths.
    dir: Option<&'a Path>,
    /// False for commands that never use a secret (`events`, `replay`,
    /// `prune`): they then work for an operator who cannot read the
    /// credential files, e.g. `sudo -u steerhook steerhook events list`.
    read: bool,
}

fn read_secret_file(key: &str, path: &str, files: SecretFiles<'_>) -> Result<String, ConfigError> {
    if !files.read {
        return Ok(String::from("[not read]"));
    }
    let credentials_dir = files.dir;
    let p = Path::new(path);
    let full = match credentials_dir {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    };
    let text = std::fs::read_to_string(&full)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", full.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

fn either_secret(
    section: &str,
    key: &str,
    inline: Option<String>,
    file: Option<String>,
    creds: SecretFiles<'_>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{section}.{key}_file"),
            format!("give either {section}.{key} or {section}.{key}_file, not both"),
        )),
        (Some(v), None) => Ok(Some(Secret::new(v))),
        (None, Some(f)) => read_secret_file(&format!("{section}.{key}_file"), &f, creds)
            .map(|v| Some(Secret::new(v))),
        (None, None) => Ok(None),
    }
}

fn secs(key: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::new(
            key,
            format!("{v} is out of range; it must be between {min} and {max}"),
        ));
    }
    Ok(Duration::from_secs(v))
}

fn count(key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::new(
            key,
            format!("{v} is out of range; it must be between {min} and {max}"),
        ));
    }
    usize::try_from(v).map_err(|_| ConfigError::new(key, "too large"))
}

fn validate(raw: RawSettings, creds: SecretFiles<'_>) -> Result<Settings, ConfigError> {
    let listen_raw = raw.server.listen.ok_or_else(|| {
        ConfigError::new("server.listen", "missing; e.g. listen = \"127.0.0.1:8787\"")
    })?;
    let listen: SocketAddr = listen_raw.parse().map_err(|_| {
        ConfigError::new(
            "server.listen",
            format!("{listen_raw:?} is not an address:port such as 127.0.0.1:8787"),
        )
    })?;
    let webhook_path = raw.server.webhook_path;
    if !webhook_path.starts_with('/') || webhook_path.len() > 256 {
        return Err(ConfigError::new(
            "server.webhook_path",
            "must start with / (e.g. \"/webhooks/opensteer\")",
        ));
    }
    if webhook_path == "/healthz" || webhook_path == "/metrics" {
        return Err(ConfigError::new(
            "server.webhook_path",
            "is taken by a built-in endpoint",
        ));
    }
    let max_body_bytes = count(
        "server.max_body_bytes",
        raw.server.max_body_bytes,
        1_024,
        64 << 20,
    )?;
    let trusted_proxies = raw
        .server
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.trim().parse::<IpAddr>().map_err(|_| {
                ConfigError::new(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{s:?} is not an IP address"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let server = ServerSettings {
        listen,
        webhook_path,
        max_body_bytes,
        trusted_proxies,
        workers: count("server.workers", raw.server.workers, 1, 64)?,
        header_timeout: Duration::from_millis(count(
            "server.header_timeout_ms",
            raw.server.header_timeout_ms,
            100,
            600_000,
        )? as u64),
        body_timeout: Duration::from_millis(count(
            "server.body_timeout_ms",
            raw.server.body_timeout_ms,
            100,
            600_000,
        )? as u64),
    };

    // Webhook secrets: inline and/or a file with one per line.
    let mut secrets: Vec<Secret> = Vec::new();
    for (i, s) in raw.webhook.secrets.into_iter().enumerate() {
        if s.is_empty() {
            return Err(ConfigError::new(
                format!("webhook.secrets[{i}]"),
                "is empty",
            ));
        }
        secrets.push(Secret::new(s));
    }
    if let Some(f) = raw.webhook.secrets_file {
        let text = read_secret_file("webhook.secrets_file", &f, creds)?;
        secrets.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(Secret::new),
        );
    }
    if secrets.is_empty() {
        return Err(ConfigError::new(
            "webhook.secrets",
            "no webhook secret configured; set webhook.secrets = [\"whsec_...\"] or webhook.secrets_file",
        ));
    }
    let tolerance = raw
        .webhook
        .tolerance_secs
        .unwrap_or(DEFAULT_TOLERANCE_SECS as i64);
    if !(1..=MAX_TOLERANCE_SECS as i64).contains(&tolerance) {
        return Err(ConfigError::new(
            "webhook.tolerance_secs",
            format!("{tolerance} is out of range; it must be between 1 and {MAX_TOLERANCE_SECS}"),
        ));
    }
    let webhook = WebhookSettings {
        secrets,
        tolerance_secs: tolerance as u64,
    };

    let storage = StorageSettings {
        path: raw.storage.path,
        synchronous: raw.storage.synchronous,
        busy_timeout: Duration::from_millis(count(
            "storage.busy_timeout_ms",
            raw.storage.busy_timeout_ms,
            0,
            600_000,
        )? as u64),
        retention: secs(
            "storage.retention_days",
            raw.storage.retention_days,
            1,
            36_500,
        )
        .map(|d| d * 86_400)?,
        prune_interval: secs(
            "storage.prune_interval_secs",
            raw.storage.prune_interval_secs,
            1,
            86_400 * 7,
        )?,
    };
    if storage.path.as_os_str().is_empty() {
        return Err(ConfigError::new("storage.path", "is empty"));
    }

    let q = raw.queue;
    let queue = QueueSettings {
        concurrency: count("queue.concurrency", q.concurrency, 1, 1_024)?,
        backoff_base: secs("queue.backoff_base_secs", q.backoff_base_secs, 0, 86_400)?,
        backoff_max: secs("queue.backoff_max_secs", q.backoff_max_secs, 1, 7 * 86_400)?,
        retry_after_max: secs(
            "queue.retry_after_max_secs",
            q.retry_after_max_secs,
            1,
            86_400,
        )?,
        auth_retry: secs("queue.auth_retry_secs", q.auth_retry_secs, 1, 86_400)?,
        fetch_max_attempts: count(
            "queue.fetch_max_attempts",
            q.fetch_max_attempts.into(),
            1,
            10_000,
        )? as u32,
        shutdown_grace: secs("queue.shutdown_grace_secs", q.shutdown_grace_secs, 0, 3_600)?,
        paused: q.paused,
    };

    let opensteer = match raw.opensteer {
        None => None,
        Some(o) => {
            let api_key = either_secret("opensteer", "api_key", o.api_key, o.api_key_file, creds)?
                .ok_or_else(|| {
                    ConfigError::new(
                        "opensteer.api_key",
                        "missing; set opensteer.api_key or opensteer.api_key_file, or remove [opensteer] to run without enrichment",
                    )
                })?;
            let url = o.base_url.trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "opensteer.base_url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
            Some(OpensteerSettings {
                base_url: url,
                api_key,
                log_page_size: count("opensteer.log_page_size", o.log_page_size.into(), 1, 10_000)?
                    as u32,
                max_log_pages: count(
                    "opensteer.max_log_pages",
                    o.max_log_pages.into(),
                    1,
                    100_000,
                )? as u32,
                connect_timeout: secs(
                    "opensteer.connect_timeout_secs",
                    o.connect_timeout_secs,
                    1,
                    300,
                )?,
                request_timeout: secs(
                    "opensteer.request_timeout_secs",
                    o.request_timeout_secs,
                    1,
                    3_600,
                )?,
                max_concurrent_requests: count(
                    "opensteer.max_concurrent_requests",
                    o.max_concurrent_requests,
                    1,
                    256,
                )?,
            })
        }
    };

    let smtp = match raw.smtp {
        None => None,
        Some(m) => {
            let password = either_secret("smtp", "password", m.password, m.password_file, creds)?;
            if password.is_some() && m.username.is_none() {
                return Err(ConfigError::new(
                    "smtp.username",
                    "a password is set but no username",
                ));
            }
            Some(SmtpSettings {
                host: m.host,
                port: m.port,
                security: m.security,
                username: m.username,
                password,
                from: m.from,
                timeout: secs("smtp.timeout_secs", m.timeout_secs, 1, 600)?,
            })
        }
    };

    let log = LogSettings {
        format: raw.log.format,
        level: raw.log.level,
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        return Err(ConfigError::new(
            "log.level",
            format!(
                "{:?} is not a level or filter such as \"info\" or \"steerhook=debug\"",
                log.level
            ),
        ));
    }

    let mut hooks = Vec::new();
    let mut names = HashSet::new();
    for (i, h) in raw.hook.into_iter().enumerate() {
        let at = |k: &str| format!("hook[{i}].{k}");
        let name = h
            .name
            .ok_or_else(|| ConfigError::new(at("name"), "missing"))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(ConfigError::new(
                at("name"),
                format!("{name:?}: use 1-64 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(ConfigError::new(
                at("name"),
                format!("{name:?} is used by another hook; names must be unique"),
            ));
        }
        if h.events.is_empty() {
            return Err(ConfigError::new(
                at("events"),
                "lists no event; e.g. events = [\"run.succeeded\", \"run.failed\"]",
            ));
        }
        let events = h
            .events
            .iter()
            .enumerate()
            .map(|(j, e)| {
                e.parse::<EventType>()
                    .map_err(|m| ConfigError::new(format!("hook[{i}].events[{j}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if h.max_attempts == 0 || h.max_attempts > 1_000 {
            return Err(ConfigError::new(
                at("max_attempts"),
                "must be between 1 and 1000",
            ));
        }
        let kind = match h.kind.as_deref() {
            Some("shell") => {
                let command = h.command.ok_or_else(|| {
                    ConfigError::new(
                        at("command"),
                        "missing; a shell hook needs command = [\"/path/to/program\", \"arg\"]",
                    )
                })?;
                if command.is_empty() || command[0].is_empty() {
                    return Err(ConfigError::new(at("command"), "is empty"));
                }
                for k in h.env.keys() {
                    if k.is_empty() || k.contains('=') || k.starts_with("STEERHOOK_") {
                        return Err(ConfigError::new(
                            format!("hook[{i}].env.{k}"),
                            "is not a usable variable name (STEERHOOK_* is reserved)",
                        ));
                    }
                }
                HookKind::Shell(ShellHookSettings {
                    command,
                    working_dir: h.working_dir,
                    env: h.env,
                    env_passthrough: h.env_passthrough,
                    timeout: secs(&at("timeout_secs"), h.timeout_secs, 1, 86_400)?,
                    kill_grace: secs(&at("kill_grace_secs"), h.kill_grace_secs, 0, 600)?,
                    max_output_bytes: count(
                        &at("max_output_bytes"),
                        h.max_output_bytes,
                        0,
                        16 << 20,
                    )?,
                })
            }
            Some("email") => {
                let to = h.to.unwrap_or_default();
                if to.is_empty() {
                    return Err(ConfigError::new(at("to"), "lists no recipient"));
                }
                if smtp.is_none() {
                    return Err(ConfigError::new(
                        "smtp",
                        format!("hook {name:?} sends e-mail but there is no [smtp] section"),
                    ));
                }
                HookKind::Email(EmailHookSettings {
                    to,
                    subject: h.subject,
                    log_lines: count(&at("log_lines"), h.log_lines, 0, 10_000)?,
                })
            }
            Some(other) => {
                return Err(ConfigError::new(
                    at("kind"),
                    format!("{other:?} is not a hook kind; use \"shell\" or \"email\""),
                ))
            }
            None => {
                return Err(ConfigError::new(
                    at("kind"),
                    "missing; \"shell\" or \"email\"",
                ))
            }
        };
        hooks.push(HookSettings {
            name,
            events,
            max_attempts: h.max_attempts,
            concurrency: count(&at("concurrency"), h.concurrency, 1, 256)?,
            kind,
        });
    }

    Ok(Settings {
        server,
        webhook,
        storage,
        queue,
        opensteer,
        smtp,
        log,
        hooks,
    })
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

    #[test]
    fn unknown_key_message_names_the_field() {
        let err = Settings::from_toml(&format!("{MINIMAL}bogus = 1\n")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
