//! The rules of the `[[hook]]` sections (SPEC §3): the keys every hook has,
//! then those of its kind (shell, e-mail, HTTP), each error naming its
//! `hook[i].key`. Part of [`super::validate`], which calls [`hooks`].

use std::collections::HashSet;

use super::raw::RawHook;
use super::validate::{count, either_secret, secs, SecretFiles};
use super::{
    ConfigError, EmailHookSettings, HookKind, HookSettings, HttpHookSettings, ShellHookSettings,
};
use crate::domain::{EventType, Match};
use crate::hooks::http::{self as http_hook, BodyShape, HookUrl, SigningKey};

/// The validated hooks of the `[[hook]]` sections, their names unique.
pub(super) fn hooks(
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
        route: h.route.as_ref().map(|m| route(i, m)).transpose()?,
        kind,
    })
}

/// `hook[i].match`: JSON Pointer -> a string or a list of strings (SPEC §3).
fn route(
    i: usize,
    table: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<Match, ConfigError> {
    let key = |pointer: &str| {
        if pointer.is_empty() {
            format!("hook[{i}].match")
        } else {
            format!("hook[{i}].match.{pointer}")
        }
    };
    let mut entries = Vec::with_capacity(table.len());
    for (pointer, value) in table {
        let wrong = || {
            ConfigError::new(
                key(pointer),
                "must be a string or a list of strings, e.g. \"products\" or [\"products\", \"prices\"] (numbers and booleans too are written as strings: \"3\", \"true\")",
            )
        };
        let accepted = match value {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(list) => list
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
                .collect::<Result<_, _>>()?,
            _ => return Err(wrong()),
        };
        entries.push((pointer.clone(), accepted));
    }
    Match::new(entries).map_err(|(pointer, message)| ConfigError::new(key(&pointer), message))
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
