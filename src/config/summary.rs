//! The summary `check-config` prints: what the daemon will do, secrets
//! counted but never shown, values written as a user writes them.

use super::{HookKind, Settings};

impl Settings {
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
        let retention_days = self.storage.retention.as_secs() / 86_400;
        let _ = match self.storage.backend {
            super::StorageBackend::Sqlite => writeln!(
                s,
                "database          sqlite {} (synchronous={}, retention {retention_days} days)",
                self.storage.path.display(),
                self.storage.synchronous.as_str(),
            ),
            super::StorageBackend::Postgres => writeln!(
                s,
                "database          postgres {} (pool {}, retention {retention_days} days)",
                self.storage.url.as_ref().map_or_else(String::new, |u| {
                    crate::store::redacted_postgres_url(u.expose())
                }),
                self.storage.pool_size,
            ),
        };
        match &self.opensteer {
            Some(o) => {
                let _ = writeln!(
                    s,
                    "opensteer         {} (api key [redacted], logLimit {}, max {} pages, max {} log bytes, settle {} s)",
                    o.base_url,
                    o.log_page_size,
                    o.max_log_pages,
                    o.max_log_bytes,
                    o.settle.as_secs()
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
                "smtp              {}:{} (security {}{})",
                m.host,
                m.port,
                m.security.as_str(),
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
                HookKind::Http(x) => {
                    let mut with = vec![x.body.as_str().to_owned()];
                    if let Some(key) = &x.body_key {
                        with.push(format!("under {key:?}"));
                    }
                    if x.signing_key.is_some() {
                        with.push("signed [redacted]".into());
                    }
                    if x.bearer_token.is_some() {
                        with.push("bearer token [redacted]".into());
                    }
                    // Names only: a value may still be something an operator
                    // would rather not see pasted in a ticket.
                    let names: Vec<&str> = x.headers.keys().map(|k| k.as_str()).collect();
                    if !names.is_empty() {
                        with.push(format!("headers {}", names.join(", ")));
                    }
                    format!(
                        "http POST {} ({}, timeout {} s)",
                        x.url,
                        with.join(", "),
                        x.timeout.as_secs()
                    )
                }
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
}
