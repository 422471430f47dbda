//! The configuration as written in the file, before validation: serde
//! structs with the defaults of every optional key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{LogFormat, SmtpSecurity, StorageBackend, Synchronous};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) webhook: RawWebhook,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) queue: RawQueue,
    pub(super) opensteer: Option<RawOpensteer>,
    pub(super) smtp: Option<RawSmtp>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) hook: Vec<RawHook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    #[serde(default = "d_webhook_path")]
    pub(super) webhook_path: String,
    #[serde(default = "d_max_body")]
    pub(super) max_body_bytes: u64,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default = "d_workers")]
    pub(super) workers: u64,
    #[serde(default = "d_header_timeout")]
    pub(super) header_timeout_ms: u64,
    #[serde(default = "d_body_timeout")]
    pub(super) body_timeout_ms: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    pub(super) secrets_file: Option<String>,
    pub(super) tolerance_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    #[serde(default)]
    pub(super) backend: StorageBackend,
    pub(super) path: Option<PathBuf>,
    pub(super) url: Option<String>,
    pub(super) url_file: Option<String>,
    #[serde(default = "d_pool_size")]
    pub(super) pool_size: u64,
    pub(super) payload_dir: Option<PathBuf>,
    #[serde(default = "d_sync")]
    pub(super) synchronous: Synchronous,
    #[serde(default = "d_busy")]
    pub(super) busy_timeout_ms: u64,
    #[serde(default = "d_retention_days")]
    pub(super) retention_days: u64,
    #[serde(default = "d_prune_interval")]
    pub(super) prune_interval_secs: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            backend: StorageBackend::default(),
            path: None,
            url: None,
            url_file: None,
            pool_size: d_pool_size(),
            payload_dir: None,
            synchronous: d_sync(),
            busy_timeout_ms: d_busy(),
            retention_days: d_retention_days(),
            prune_interval_secs: d_prune_interval(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    #[serde(default = "d_concurrency")]
    pub(super) concurrency: u64,
    #[serde(default = "d_backoff_base")]
    pub(super) backoff_base_secs: u64,
    #[serde(default = "d_backoff_max")]
    pub(super) backoff_max_secs: u64,
    #[serde(default = "d_retry_after_max")]
    pub(super) retry_after_max_secs: u64,
    #[serde(default = "d_auth_retry")]
    pub(super) auth_retry_secs: u64,
    #[serde(default = "d_fetch_attempts")]
    pub(super) fetch_max_attempts: u32,
    #[serde(default = "d_shutdown_grace")]
    pub(super) shutdown_grace_secs: u64,
    #[serde(default = "d_lease")]
    pub(super) lease_secs: u64,
    #[serde(default)]
    pub(super) paused: bool,
    #[serde(default = "d_worker_nice")]
    pub(super) nice: u64,
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
            lease_secs: d_lease(),
            paused: false,
            nice: d_worker_nice(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOpensteer {
    #[serde(default = "d_base_url")]
    pub(super) base_url: String,
    pub(super) api_key: Option<String>,
    pub(super) api_key_file: Option<String>,
    #[serde(default = "d_page_size")]
    pub(super) log_page_size: u32,
    #[serde(default = "d_max_pages")]
    pub(super) max_log_pages: u32,
    #[serde(default = "d_max_log_bytes")]
    pub(super) max_log_bytes: u64,
    #[serde(default = "d_settle")]
    pub(super) settle_secs: u64,
    #[serde(default = "d_connect_timeout")]
    pub(super) connect_timeout_secs: u64,
    #[serde(default = "d_request_timeout")]
    pub(super) request_timeout_secs: u64,
    #[serde(default = "d_api_concurrency")]
    pub(super) max_concurrent_requests: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    #[serde(default = "d_smtp_host")]
    pub(super) host: String,
    #[serde(default = "d_smtp_port")]
    pub(super) port: u16,
    #[serde(default = "d_smtp_security")]
    pub(super) security: SmtpSecurity,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<String>,
    #[serde(default = "d_smtp_from")]
    pub(super) from: String,
    #[serde(default = "d_smtp_timeout")]
    pub(super) timeout_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "d_log_format")]
    pub(super) format: LogFormat,
    #[serde(default = "d_log_level")]
    pub(super) level: String,
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
pub(super) struct RawHook {
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) events: Vec<String>,
    #[serde(default = "d_max_attempts")]
    pub(super) max_attempts: u32,
    #[serde(default = "d_hook_concurrency")]
    pub(super) concurrency: u64,
    /// Any kind: JSON Pointer -> a string or a list of strings (SPEC §3);
    /// checked in `validate`, which words the errors.
    #[serde(rename = "match")]
    pub(super) route: Option<BTreeMap<String, serde_json::Value>>,
    // shell
    pub(super) command: Option<Vec<String>>,
    pub(super) working_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) env_passthrough: Vec<String>,
    /// Each kind has its own default (a shell hook runs an ETL, an HTTP
    /// request only starts one).
    pub(super) timeout_secs: Option<u64>,
    #[serde(default = "d_kill_grace")]
    pub(super) kill_grace_secs: u64,
    #[serde(default = "d_max_output")]
    pub(super) max_output_bytes: u64,
    // email
    pub(super) to: Option<Vec<String>>,
    pub(super) subject: Option<String>,
    #[serde(default = "d_log_lines")]
    pub(super) log_lines: u64,
    // http
    pub(super) url: Option<String>,
    pub(super) bearer_token: Option<String>,
    pub(super) bearer_token_file: Option<String>,
    pub(super) headers: Option<BTreeMap<String, String>>,
    pub(super) secret: Option<String>,
    pub(super) secret_file: Option<String>,
    pub(super) body: Option<String>,
    pub(super) body_key: Option<String>,
}

/// The worker yields the CPU to the answers (README "Hooks and the CPU").
fn d_worker_nice() -> u64 {
    10
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
fn d_pool_size() -> u64 {
    16
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
fn d_lease() -> u64 {
    60
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
fn d_max_log_bytes() -> u64 {
    64 * 1024 * 1024
}
fn d_settle() -> u64 {
    120
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
fn d_kill_grace() -> u64 {
    10
}
fn d_max_output() -> u64 {
    65_536
}
fn d_log_lines() -> u64 {
    20
}
