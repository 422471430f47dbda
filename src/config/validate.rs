//! Every rule of the configuration, one function per section, each error
//! naming its key (the `[[hook]]` sections' in [`super::hooks`]).
//! `check-config`, `serve` and `doctor` all load through here, so they
//! agree on what is valid, and a bad value always exits 78.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawOpensteer, RawQueue, RawServer, RawSettings, RawSmtp, RawStorage, RawWebhook};
use super::{
    ConfigError, LogSettings, OpensteerSettings, QueueSettings, ServerSettings, Settings,
    SmtpSettings, StorageBackend, StorageSettings, WebhookSettings, DEFAULT_TOLERANCE_SECS,
    MAX_TOLERANCE_SECS,
};
use crate::secret::Secret;

/// How `<key>_file` secrets are handled while loading.
#[derive(Debug, Clone, Copy)]
pub(super) struct SecretFiles<'a> {
    /// `$CREDENTIALS_DIRECTORY`, for relative paths.
    pub dir: Option<&'a Path>,
    /// False for commands that never use a secret (`events`, `replay`,
    /// `prune`): they then work for an operator who cannot read the
    /// credential files, e.g. `sudo -u steerhook steerhook events list`.
    pub read: bool,
}

/// The validated settings of a raw tree.
pub(super) fn validate(raw: RawSettings, creds: SecretFiles<'_>) -> Result<Settings, ConfigError> {
    let smtp = raw.smtp.map(|m| smtp(m, creds)).transpose()?;
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
    Ok(Settings {
        server: server(raw.server)?,
        webhook: webhook(raw.webhook, creds)?,
        storage: storage(raw.storage, creds)?,
        queue: queue(raw.queue)?,
        opensteer: raw.opensteer.map(|o| opensteer(o, creds)).transpose()?,
        hooks: super::hooks::hooks(raw.hook, smtp.is_some(), creds)?,
        smtp,
        log,
    })
}

fn server(raw: RawServer) -> Result<ServerSettings, ConfigError> {
    let listen_raw = raw.listen.ok_or_else(|| {
        ConfigError::new("server.listen", "missing; e.g. listen = \"127.0.0.1:8787\"")
    })?;
    let listen: SocketAddr = listen_raw.parse().map_err(|_| {
        ConfigError::new(
            "server.listen",
            format!("{listen_raw:?} is not an address:port such as 127.0.0.1:8787"),
        )
    })?;
    let webhook_path = raw.webhook_path;
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
    let trusted_proxies = raw
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
    Ok(ServerSettings {
        listen,
        webhook_path,
        max_body_bytes: count("server.max_body_bytes", raw.max_body_bytes, 1_024, 64 << 20)?,
        trusted_proxies,
        workers: count("server.workers", raw.workers, 1, 64)?,
        header_timeout: millis(
            "server.header_timeout_ms",
            raw.header_timeout_ms,
            100,
            600_000,
        )?,
        body_timeout: millis("server.body_timeout_ms", raw.body_timeout_ms, 100, 600_000)?,
    })
}

fn webhook(raw: RawWebhook, creds: SecretFiles<'_>) -> Result<WebhookSettings, ConfigError> {
    // Inline and/or a file with one per line.
    let mut secrets: Vec<Secret> = Vec::new();
    for (i, s) in raw.secrets.into_iter().enumerate() {
        if s.is_empty() {
            return Err(ConfigError::new(
                format!("webhook.secrets[{i}]"),
                "is empty",
            ));
        }
        secrets.push(Secret::new(s));
    }
    if let Some(f) = raw.secrets_file {
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
    let tolerance = raw.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS as i64);
    if !(1..=MAX_TOLERANCE_SECS as i64).contains(&tolerance) {
        return Err(ConfigError::new(
            "webhook.tolerance_secs",
            format!("{tolerance} is out of range; it must be between 1 and {MAX_TOLERANCE_SECS}"),
        ));
    }
    Ok(WebhookSettings {
        secrets,
        tolerance_secs: tolerance as u64,
    })
}

fn storage(raw: RawStorage, creds: SecretFiles<'_>) -> Result<StorageSettings, ConfigError> {
    // Read even for commands that use no other secret: they read the database.
    let creds = SecretFiles {
        read: true,
        ..creds
    };
    let url = either_secret("storage", "url", raw.url, raw.url_file, creds)?;
    let path = match (raw.backend, raw.path, &url) {
        (StorageBackend::Sqlite, _, Some(_)) => {
            return Err(ConfigError::new(
                "storage.url",
                "is for backend = \"postgres\"; with SQLite set storage.path",
            ))
        }
        (StorageBackend::Sqlite, path, None) => path.unwrap_or_else(|| "steerhook.db".into()),
        (StorageBackend::Postgres, Some(_), _) => {
            return Err(ConfigError::new(
                "storage.path",
                "is for backend = \"sqlite\"; with PostgreSQL set storage.url",
            ))
        }
        (StorageBackend::Postgres, None, None) => {
            return Err(ConfigError::new(
                "storage.url",
                "missing; backend = \"postgres\" needs url = \"postgres://user@host:5432/db\" (or url_file)",
            ))
        }
        (StorageBackend::Postgres, None, Some(url)) => {
            // A `_file` URL that was not read has nothing to check.
            if creds.read {
                crate::store::check_postgres_url(url.expose())
                    .map_err(|m| ConfigError::new("storage.url", m))?;
            }
            PathBuf::new()
        }
    };
    if raw.backend == StorageBackend::Sqlite && path.as_os_str().is_empty() {
        return Err(ConfigError::new("storage.path", "is empty"));
    }
    Ok(StorageSettings {
        backend: raw.backend,
        path,
        url,
        pool_size: count("storage.pool_size", raw.pool_size, 1, 512)?,
        payload_dir: raw.payload_dir,
        synchronous: raw.synchronous,
        busy_timeout: millis("storage.busy_timeout_ms", raw.busy_timeout_ms, 0, 600_000)?,
        retention: secs("storage.retention_days", raw.retention_days, 1, 36_500)? * 86_400,
        prune_interval: secs(
            "storage.prune_interval_secs",
            raw.prune_interval_secs,
            1,
            86_400 * 7,
        )?,
    })
}

fn queue(q: RawQueue) -> Result<QueueSettings, ConfigError> {
    Ok(QueueSettings {
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
        lease: secs("queue.lease_secs", q.lease_secs, 3, 3_600)?,
        nice: i32::try_from(count("queue.nice", q.nice, 0, 19)?).unwrap_or(19),
    })
}

fn opensteer(o: RawOpensteer, creds: SecretFiles<'_>) -> Result<OpensteerSettings, ConfigError> {
    let api_key = either_secret("opensteer", "api_key", o.api_key, o.api_key_file, creds)?
        .ok_or_else(|| {
            ConfigError::new(
                "opensteer.api_key",
                "missing; set opensteer.api_key or opensteer.api_key_file, or remove [opensteer] to run without enrichment",
            )
        })?;
    let settings = OpensteerSettings {
        base_url: o.base_url.trim().trim_end_matches('/').to_owned(),
        api_key,
        log_page_size: count("opensteer.log_page_size", o.log_page_size.into(), 1, 10_000)? as u32,
        max_log_pages: count(
            "opensteer.max_log_pages",
            o.max_log_pages.into(),
            1,
            100_000,
        )? as u32,
        // Up to 1 TiB: the logs are on disk, not in memory, however large.
        max_log_bytes: in_range("opensteer.max_log_bytes", o.max_log_bytes, 1024, 1 << 40)?,
        settle: secs("opensteer.settle_secs", o.settle_secs, 0, 3_600)?,
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
    };
    // The client's own checks (the URL's shape, a key that fits in a
    // header), run now so that a file `check-config` accepts also starts.
    // A `_file` key that was not read has no value to check.
    if creds.read {
        crate::opensteer::OpensteerClient::check_settings(&settings.client_settings())
            .map_err(|(key, message)| ConfigError::new(key, message))?;
    }
    Ok(settings)
}

fn smtp(m: RawSmtp, creds: SecretFiles<'_>) -> Result<SmtpSettings, ConfigError> {
    let password = either_secret("smtp", "password", m.password, m.password_file, creds)?;
    let settings = SmtpSettings {
        host: m.host,
        port: m.port,
        security: m.security,
        username: m.username,
        password,
        from: m.from,
        timeout: secs("smtp.timeout_secs", m.timeout_secs, 1, 600)?,
    };
    // The mailer's own checks (a `from` that is a mailbox, a host usable for
    // TLS), run now so that `check-config` and `serve` agree.
    settings.mailer().map_err(|e| match e {
        crate::hooks::email::EmailError::Config { key, message } => ConfigError::new(key, message),
        other => ConfigError::new("smtp", other.to_string()),
    })?;
    Ok(settings)
}

/// Reads a `<key>_file` secret, relative to `$CREDENTIALS_DIRECTORY` when set.
pub(super) fn read_secret_file(
    key: &str,
    path: &str,
    files: SecretFiles<'_>,
) -> Result<String, ConfigError> {
    if !files.read {
        return Ok(String::from("[not read]"));
    }
    let p = Path::new(path);
    let full = match files.dir {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    };
    let text = std::fs::read_to_string(&full)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", full.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// `<section>.<key>` given inline or as `<key>_file`, not both.
pub(super) fn either_secret(
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

fn in_range(key: &str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::new(
            key,
            format!("{v} is out of range; it must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

pub(super) fn secs(key: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    in_range(key, v, min, max).map(Duration::from_secs)
}

fn millis(key: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    in_range(key, v, min, max).map(Duration::from_millis)
}

pub(super) fn count(key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    usize::try_from(in_range(key, v, min, max)?).map_err(|_| ConfigError::new(key, "too large"))
}
