//! The configuration a test app is built from: typed options for what most
//! tests set, raw TOML lines per section for anything else.
//!
//! A section's raw lines win over its typed keys: a typed key is left out
//! when the raw lines set it, so `.queue("backoff_base_secs = 5")` overrides
//! a preset's default without a duplicate-key error.

use std::path::{Path, PathBuf};

use super::SECRET;

/// The sections, in the order they are written.
const SECTIONS: [&str; 7] = [
    "server",
    "webhook",
    "storage",
    "queue",
    "opensteer",
    "smtp",
    "log",
];

/// A configuration file's content, less the storage lines that the test's
/// database ([`super::db::TestDb::storage_toml`]) adds.
#[derive(Debug, Clone)]
pub struct Config {
    /// Typed keys per section: (section, key, TOML value).
    keys: Vec<(&'static str, String, String)>,
    /// Raw lines per section.
    raw: Vec<(&'static str, String)>,
    /// `[[hook]]` tables.
    hooks: Vec<String>,
    /// Anything after everything else.
    tail: String,
}

impl Default for Config {
    /// `server.listen` on a free port of 127.0.0.1 and [`SECRET`].
    fn default() -> Self {
        Config {
            keys: Vec::new(),
            raw: Vec::new(),
            hooks: Vec::new(),
            tail: String::new(),
        }
        .set("server", "listen", toml_str("127.0.0.1:0"))
        .secrets(&[SECRET])
    }
}

impl Config {
    /// Sets a typed key (replacing an earlier value of the same key).
    pub fn set(mut self, section: &'static str, key: &str, toml_value: String) -> Self {
        assert!(SECTIONS.contains(&section), "unknown section {section}");
        self.keys.retain(|(s, k, _)| !(*s == section && k == key));
        self.keys.push((section, key.to_owned(), toml_value));
        self
    }

    /// Appends raw lines to `[section]`.
    pub fn lines(mut self, section: &'static str, lines: &str) -> Self {
        assert!(SECTIONS.contains(&section), "unknown section {section}");
        self.raw.push((section, lines.to_owned()));
        self
    }

    /// `server.listen`.
    pub fn listen(self, addr: impl ToString) -> Self {
        self.set("server", "listen", toml_str(&addr.to_string()))
    }

    /// `webhook.secrets`.
    pub fn secrets(self, secrets: &[&str]) -> Self {
        self.set("webhook", "secrets", toml_list(secrets))
    }

    /// `webhook.tolerance_secs`.
    pub fn tolerance_secs(self, secs: u64) -> Self {
        self.set("webhook", "tolerance_secs", secs.to_string())
    }

    /// `[opensteer]` pointing at `base_url` with [`super::API_KEY`].
    pub fn opensteer(self, base_url: &str) -> Self {
        self.set("opensteer", "base_url", toml_str(base_url)).set(
            "opensteer",
            "api_key",
            toml_str(super::API_KEY),
        )
    }

    /// `[smtp]` for the test server on `port`: plain text, a 5 s timeout.
    pub fn smtp(self, port: u16) -> Self {
        self.set("smtp", "host", toml_str("127.0.0.1"))
            .set("smtp", "port", port.to_string())
            .set("smtp", "security", toml_str("none"))
            .set(
                "smtp",
                "from",
                toml_str("steerhook <steerhook@example.test>"),
            )
            .set("smtp", "timeout_secs", "5".to_owned())
    }

    /// Appends a `[[hook]]` table (see [`super::sandbox::Sandbox::shell_hook`]).
    pub fn hook(mut self, table: &str) -> Self {
        self.hooks.push(table.to_owned());
        self
    }

    /// Removes every `[[hook]]` table added so far.
    pub fn without_hooks(mut self) -> Self {
        self.hooks.clear();
        self
    }

    /// Appends raw TOML after everything else (whole sections).
    pub fn tail(mut self, toml: &str) -> Self {
        self.tail.push_str(toml);
        self.tail.push('\n');
        self
    }

    /// The file's text, with `storage` (from the test's database) in `[storage]`.
    pub fn toml(&self, storage: &str) -> String {
        let mut out = String::new();
        for section in SECTIONS {
            let raw: String = self
                .raw
                .iter()
                .filter(|(s, _)| *s == section)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            let raw = if section == "storage" {
                // The database's own lines, less those the test overrides.
                let own: String = storage
                    .lines()
                    .filter(|l| !sets_key(&raw, l.split('=').next().unwrap_or_default().trim()))
                    .map(|l| format!("{l}\n"))
                    .collect();
                format!("{own}{raw}")
            } else {
                raw
            };
            let keys: String = self
                .keys
                .iter()
                .filter(|(s, k, _)| *s == section && !sets_key(&raw, k))
                .map(|(_, k, v)| format!("{k} = {v}\n"))
                .collect();
            if section == "storage" || !(keys.is_empty() && raw.trim().is_empty()) {
                out.push_str(&format!("[{section}]\n{keys}{raw}\n"));
            }
        }
        for hook in &self.hooks {
            out.push_str(hook);
            out.push('\n');
        }
        out.push_str(&self.tail);
        out
    }

    /// The file's text for a SQLite database at `path`.
    pub fn toml_at(&self, path: &Path) -> String {
        self.toml(&super::db::sqlite_storage_toml(path))
    }
}

/// Whether `lines` set `key` (at the start of a line, before `=`).
fn sets_key(lines: &str, key: &str) -> bool {
    lines
        .lines()
        .any(|l| l.split('=').next().map(str::trim) == Some(key))
}

/// A TOML string literal for `s`, escaped as TOML wants.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
pub fn toml_list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Writes `text` as `steerhook.toml` in `dir`, for the real binary; returns
/// its path.
pub fn write_config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("steerhook.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}
