//! Every rule of the configuration, one function per section, each error
//! naming its key. `check-config`, `serve` and `doctor` all load through
//! here, so they agree on what is valid, and a bad value always exits 78.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    RawHook, RawOpensteer, RawQueue, RawServer, RawSettings, RawSmtp, RawStorage, RawWebhook,
};
use super::{
    ConfigError, EmailHookSettings, HookKind, HookSettings, HttpHookSettings, LogSettings,
    OpensteerSettings, QueueSettings, ServerSettings, Settings, ShellHookSettings, SmtpSettings,
    StorageBackend, StorageSettings, WebhookSettings, DEFAULT_TOLERANCE_SECS, MAX_TOLERANCE_SECS,
};
use crate::domain::EventType;
use crate::hooks::http::{self as http_hook, BodyShape, HookUrl, SigningKey};
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
        hooks: hooks(raw.hook, smtp.is_some(), creds)?,
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

fn hooks(
    raw: Vec<RawHook>,
    have_smtp: bool,
    creds: SecretFiles<'_>,
) -> Result<Vec<HookSettings>, ConfigError> {
    let mut names = HashSet::new();
    let mut hooks = Vec::with_capacity(raw.len());
    for (i, h) in raw.into_iter().enumerate() {
        let hook = hook(i, h, have_smtp, creds)?;
        if !names.insert(hook.name.clone()) {
            return Err(ConfigError::new(
                format!("hook[{i}].name"),
                format!(
                    "{:?} is used by another hook; names must be unique",
                    hook.name
                ),
            ));
        }
        hooks.push(hook);
    }
    Ok(hooks)
}

fn hook(
    i: usize,
    h: RawHook,
    have_smtp: bool,
    creds: SecretFiles<'_>,
) -> Result<HookSettings, ConfigError> {
    let at = |k: &str| format!("hook[{i}].{k}");
    let name = h
        .name
        .clone()
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
    if let Some(kind) = h.kind.as_deref() {
        keys_of_other_kinds(i, kind, &h)?;
    }
    let kind = match h.kind.as_deref() {
        Some("shell") => HookKind::Shell(shell_hook(i, &h)?),
        Some("http") => HookKind::Http(http_hook(i, &h, creds)?),
        Some("email") => {
            let to = h.to.clone().unwrap_or_default();
            if to.is_empty() {
                return Err(ConfigError::new(at("to"), "lists no recipient"));
            }
            if !have_smtp {
                return Err(ConfigError::new(
                    "smtp",
                    format!("hook {name:?} sends e-mail but there is no [smtp] section"),
                ));
            }
            HookKind::Email(EmailHookSettings {
                to,
                subject: h.subject.clone(),
                log_lines: count(&at("log_lines"), h.log_lines, 0, 10_000)?,
            })
        }
        Some(other) => {
            return Err(ConfigError::new(
                at("kind"),
                format!("{other:?} is not a hook kind; use \"shell\", \"email\" or \"http\""),
            ))
        }
        None => {
            return Err(ConfigError::new(
                at("kind"),
                "missing; \"shell\", \"email\" or \"http\"",
            ))
        }
    };
    Ok(HookSettings {
        name,
        events,
        max_attempts: h.max_attempts,
        concurrency: count(&at("concurrency"), h.concurrency, 1, 256)?,
        kind,
    })
}

fn shell_hook(i: usize, h: &RawHook) -> Result<ShellHookSettings, ConfigError> {
    let at = |k: &str| format!("hook[{i}].{k}");
    let command = h.command.clone().ok_or_else(|| {
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
    Ok(ShellHookSettings {
        command,
        working_dir: h.working_dir.clone(),
        env: h.env.clone(),
        env_passthrough: h.env_passthrough.clone(),
        timeout: secs(
            &at("timeout_secs"),
            h.timeout_secs.unwrap_or(DEFAULT_SHELL_TIMEOUT_SECS),
            1,
            86_400,
        )?,
        kill_grace: secs(&at("kill_grace_secs"), h.kill_grace_secs, 0, 600)?,
        max_output_bytes: count(&at("max_output_bytes"), h.max_output_bytes, 0, 16 << 20)?,
    })
}

/// The keys only an HTTP hook reads.
const HTTP_KEYS: [&str; 8] = [
    "url",
    "bearer_token",
    "bearer_token_file",
    "headers",
    "secret",
    "secret_file",
    "body",
    "body_key",
];

/// A key given to a hook of a kind that does not read it is an error, as an
/// unknown key is: it would be silently ignored.
fn keys_of_other_kinds(i: usize, kind: &str, h: &RawHook) -> Result<(), ConfigError> {
    let http_given = [
        h.url.is_some(),
        h.bearer_token.is_some(),
        h.bearer_token_file.is_some(),
        h.headers.is_some(),
        h.secret.is_some(),
        h.secret_file.is_some(),
        h.body.is_some(),
        h.body_key.is_some(),
    ];
    let given: Vec<(&str, &str)> = if kind == "http" {
        [
            ("command", h.command.is_some(), "shell"),
            ("working_dir", h.working_dir.is_some(), "shell"),
            ("env", !h.env.is_empty(), "shell"),
            ("env_passthrough", !h.env_passthrough.is_empty(), "shell"),
            ("to", h.to.is_some(), "email"),
            ("subject", h.subject.is_some(), "email"),
        ]
        .into_iter()
        .filter(|(_, given, _)| *given)
        .map(|(key, _, kind)| (key, kind))
        .collect()
    } else {
        HTTP_KEYS
            .iter()
            .zip(http_given)
            .filter(|(_, given)| *given)
            .map(|(key, _)| (*key, "http"))
            .collect()
    };
    match given.first() {
        Some((key, of)) => Err(ConfigError::new(
            format!("hook[{i}].{key}"),
            format!("is a key of kind = \"{of}\" hooks, not of kind = {kind:?}; remove it or change the kind"),
        )),
        None => Ok(()),
    }
}

fn http_hook(
    i: usize,
    h: &RawHook,
    creds: SecretFiles<'_>,
) -> Result<HttpHookSettings, ConfigError> {
    let at = |k: &str| format!("hook[{i}].{k}");
    let section = format!("hook[{i}]");
    let url = h.url.as_deref().ok_or_else(|| {
        ConfigError::new(
            at("url"),
            "missing; an http hook needs url = \"https://...\"",
        )
    })?;
    let url = HookUrl::parse(url).map_err(|m| ConfigError::new(at("url"), m))?;
    let bearer_token = either_secret(
        &section,
        "bearer_token",
        h.bearer_token.clone(),
        h.bearer_token_file.clone(),
        creds,
    )?;
    let token_read = creds.read || h.bearer_token.is_some();
    if let (Some(token), true) = (&bearer_token, token_read) {
        http_hook::bearer_header(token).map_err(|m| ConfigError::new(at("bearer_token"), m))?;
    }
    let headers = http_hook::parse_headers(&h.headers.clone().unwrap_or_default()).map_err(
        |(name, message)| {
            let key = if name.is_empty() {
                at("headers")
            } else {
                format!("hook[{i}].headers.{name}")
            };
            ConfigError::new(key, message)
        },
    )?;
    let secret = either_secret(
        &section,
        "secret",
        h.secret.clone(),
        h.secret_file.clone(),
        creds,
    )?;
    let signing_key = match secret {
        None => None,
        // A `secret_file` that was not read holds no key to check.
        Some(_) if !creds.read && h.secret.is_none() => Some(SigningKey::unread()),
        Some(secret) => {
            let key = if h.secret.is_some() {
                "secret"
            } else {
                "secret_file"
            };
            Some(SigningKey::parse(secret.expose()).map_err(|m| ConfigError::new(at(key), m))?)
        }
    };
    let body = match h.body.as_deref() {
        None => BodyShape::Document,
        Some(word) => BodyShape::parse(word).map_err(|m| ConfigError::new(at("body"), m))?,
    };
    if let Some(key) = &h.body_key {
        if key.is_empty() || key.len() > http_hook::MAX_BODY_KEY_BYTES {
            return Err(ConfigError::new(
                at("body_key"),
                format!(
                    "must be 1 to {} bytes, e.g. \"conf\"",
                    http_hook::MAX_BODY_KEY_BYTES
                ),
            ));
        }
    }
    Ok(HttpHookSettings {
        url,
        bearer_token,
        headers,
        signing_key,
        body,
        body_key: h.body_key.clone(),
        timeout: secs(
            &at("timeout_secs"),
            h.timeout_secs.unwrap_or(http_hook::DEFAULT_TIMEOUT_SECS),
            1,
            3_600,
        )?,
    })
}

/// `timeout_secs` of a shell hook when the file gives none.
const DEFAULT_SHELL_TIMEOUT_SECS: u64 = 900;

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

fn secs(key: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    in_range(key, v, min, max).map(Duration::from_secs)
}

fn millis(key: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    in_range(key, v, min, max).map(Duration::from_millis)
}

fn count(key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    usize::try_from(in_range(key, v, min, max)?).map_err(|_| ConfigError::new(key, "too large"))
}
