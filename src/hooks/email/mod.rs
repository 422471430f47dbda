//! The e-mail hook: renders one plain-text message per event (SPEC §6) and
//! sends it through `[smtp]` with lettre.
//!
//! The document a hook receives is read tolerantly: the run and log shapes
//! are not published, so every field is looked up under several names and a
//! missing one is simply left out of the message.
//!
//! Errors are classified for the dispatcher: anything that may succeed later
//! (connection refused, timeouts, TLS handshake failures, SMTP 4xx) is
//! [`EmailError::Transient`] and worth a retry; a 5xx reply or an address that
//! can never be valid is [`EmailError::Permanent`].

use std::fmt;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::Value;

use futures_util::future::BoxFuture;

use super::{Delivery, FailureKind, Sink, SinkFailure, SinkOutcome};
use crate::secret::Secret;
pub use render::{message_id_for, render_subject};
use render::{render_body, render_subject_for_hook, strip_controls};

mod render;

pub use render::{
    DEFAULT_SUBJECT_TEMPLATE, MAX_ERROR_CHARS, MAX_LOG_LINE_CHARS, MAX_SUBJECT_CHARS,
};

/// How the connection to the SMTP server is protected (`smtp.security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text. Only for a relay on localhost or a trusted network.
    None,
    /// Plain connect, then `STARTTLS`; refuses to continue unencrypted.
    #[serde(rename = "starttls")]
    StartTls,
    /// Implicit TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// The `[smtp]` section, already loaded (secrets resolved from `_file`).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Server host name or IP address; also the name its certificate must carry.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Transport protection.
    pub security: SmtpSecurity,
    /// AUTH user; credentials are sent only when this is set.
    pub username: Option<String>,
    /// AUTH password; redacted in `Debug`.
    pub password: Option<Secret>,
    /// The `From:` mailbox, e.g. `steerhook <steerhook@example.com>`.
    pub from: String,
    /// Bounds connecting, and separately the whole SMTP conversation of one send.
    pub timeout: Duration,
}

/// An e-mail hook's own settings, as its `[[hook]]` table configures them.
#[derive(Debug, Clone)]
pub struct EmailHookSettings {
    /// Recipient mailboxes.
    pub to: Vec<String>,
    /// Subject template; `None` means [`DEFAULT_SUBJECT_TEMPLATE`].
    pub subject: Option<String>,
    /// How many of the newest log entries go into the body.
    pub log_lines: usize,
}

/// What one e-mail hook wants sent.
#[derive(Debug, Clone)]
pub struct EmailSpec {
    /// The hook's name; part of the Message-ID and usable as `{hook}` in the subject.
    pub hook: String,
    /// What its `[[hook]]` table says.
    pub settings: EmailHookSettings,
}

/// What the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    /// The Message-ID header sent, angle brackets included.
    pub message_id: String,
    /// The subject sent.
    pub subject: String,
    /// The server's final reply to the message, e.g. `250 2.0.0 queued as ABC`.
    pub server_reply: String,
}

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// May succeed later: the server is unreachable, slow, or answered 4xx.
    #[error("{0}")]
    Transient(String),
    /// Will not succeed as is: the server answered 5xx, or an address is invalid.
    #[error("{0}")]
    Permanent(String),
    /// The `[smtp]` settings are unusable.
    #[error("{key}: {message}")]
    Config {
        /// The offending key, e.g. `smtp.from`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl EmailError {
    /// A stable code for logs, metrics and `events show`.
    pub fn code(&self) -> &'static str {
        match self {
            EmailError::Transient(_) => "SMTP_TRANSIENT",
            EmailError::Permanent(_) => "SMTP_PERMANENT",
            EmailError::Config { .. } => "SMTP_CONFIG",
        }
    }

    /// Whether retrying the same send later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, EmailError::Transient(_))
    }
}

/// Sends event e-mails. Built once from [`SmtpSettings`]; cheap to clone.
///
/// Each send opens its own SMTP connection: lettre's connection pool spawns
/// a background task when it is built, which would make `Mailer::new` panic
/// outside a tokio runtime (e.g. in `check-config`), and one message per run
/// does not need connection reuse.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    from_domain: String,
    /// `host:port`, for error messages.
    server: String,
    security: SmtpSecurity,
    timeout: Duration,
}

impl fmt::Debug for Mailer {
    // Written by hand: lettre's transport `Debug` prints the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn config_error(key: &'static str, message: impl Into<String>) -> EmailError {
    EmailError::Config {
        key,
        message: message.into(),
    }
}

impl SmtpSettings {
    /// The mailer for these settings (checked when the configuration loads).
    pub fn mailer(&self) -> Result<Mailer, EmailError> {
        Mailer::new(self)
    }
}

impl SmtpSecurity {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::None => "none",
            SmtpSecurity::StartTls => "starttls",
            SmtpSecurity::Tls => "tls",
        }
    }
}

impl Mailer {
    /// Checks the settings and builds the transport. Does not connect.
    pub fn new(settings: &SmtpSettings) -> Result<Self, EmailError> {
        let host = settings.host.trim();
        if host.is_empty() {
            return Err(config_error("smtp.host", "must not be empty"));
        }
        if settings.port == 0 {
            return Err(config_error("smtp.port", "must be 1-65535"));
        }
        if settings.timeout.is_zero() {
            return Err(config_error(
                "smtp.timeout_secs",
                "must be greater than zero",
            ));
        }
        let from: Mailbox = settings.from.parse().map_err(|e| {
            config_error(
                "smtp.from",
                format!(
                    "`{}` is not a valid mailbox ({e}); write e.g. \"steerhook <steerhook@example.com>\"",
                    settings.from
                ),
            )
        })?;
        let from_domain = from.email.domain().to_owned();

        let tls_parameters = || {
            TlsParameters::new(host.to_owned()).map_err(|e| {
                config_error(
                    "smtp.host",
                    format!("`{host}` cannot be used for TLS certificate checks: {e}"),
                )
            })
        };
        let tls = match settings.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls_parameters()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls_parameters()?),
        };

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder =
                    builder.credentials(Credentials::new(user.clone(), password.expose().into()));
            }
            (Some(_), None) => {
                return Err(config_error(
                    "smtp.password",
                    "required when smtp.username is set (or use smtp.password_file)",
                ))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "smtp.username",
                    "required when smtp.password is set",
                ))
            }
            (None, None) => {}
        }

        Ok(Self {
            transport: builder.build(),
            from,
            from_domain,
            server: format!("{host}:{}", settings.port),
            security: settings.security,
            timeout: settings.timeout,
        })
    }

    /// Renders and sends the e-mail for one event.
    ///
    /// The Message-ID depends only on the event id, the hook and the sender's
    /// domain, so a retried send after an unclear failure carries the same id
    /// and the recipient (or its mail system) can recognise the duplicate.
    #[tracing::instrument(skip_all, fields(event_id = %event_id, hook = %spec.hook))]
    pub async fn send_event(
        &self,
        spec: &EmailSpec,
        doc: &Value,
        event_id: &str,
    ) -> Result<SentEmail, EmailError> {
        if spec.settings.to.is_empty() {
            return Err(EmailError::Permanent(format!(
                "hook `{}`: no recipients in `to`",
                spec.hook
            )));
        }
        let mut recipients = Vec::with_capacity(spec.settings.to.len());
        for to in &spec.settings.to {
            let mailbox: Mailbox = to.parse().map_err(|e| {
                EmailError::Permanent(format!(
                    "hook `{}`: `to` address `{}` is not a valid mailbox ({e}); fix the hook's `to` list",
                    spec.hook,
                    strip_controls(to)
                ))
            })?;
            recipients.push(mailbox);
        }

        let subject = render_subject_for_hook(spec.settings.subject.as_deref(), doc, &spec.hook);
        let body = render_body(doc, spec.settings.log_lines);
        let message_id = message_id_for(event_id, &spec.hook, &self.from_domain);

        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject.clone())
            .message_id(Some(message_id.clone()))
            .date_now()
            .header(ContentType::TEXT_PLAIN);
        for mailbox in recipients {
            builder = builder.to(mailbox);
        }
        let message = builder.body(body).map_err(|e| {
            EmailError::Permanent(format!("hook `{}`: cannot build message: {e}", spec.hook))
        })?;

        // lettre bounds only the connect with its timeout; a server that
        // accepts and then stalls would hold the delivery forever.
        let response = match tokio::time::timeout(self.timeout, self.transport.send(message)).await
        {
            Ok(result) => result.map_err(|e| classify(&e, &self.server, self.security))?,
            Err(_) => {
                return Err(EmailError::Transient(format!(
                    "SMTP server {} did not finish the exchange within {}",
                    self.server,
                    humantime::format_duration(self.timeout)
                )))
            }
        };
        let server_reply = reply_text(&response);
        tracing::info!(%message_id, %server_reply, "e-mail accepted by SMTP server");
        Ok(SentEmail {
            message_id,
            subject,
            server_reply,
        })
    }

    /// Connects, greets (EHLO), authenticates when credentials are set and
    /// sends NOOP: what `steerhook doctor` reports for SMTP.
    pub async fn check(&self) -> Result<(), EmailError> {
        match tokio::time::timeout(self.timeout, self.transport.test_connection()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(EmailError::Transient(format!(
                "SMTP server {} accepted the connection but did not answer NOOP",
                self.server
            ))),
            Ok(Err(e)) => Err(classify(&e, &self.server, self.security)),
            Err(_) => Err(EmailError::Transient(format!(
                "SMTP server {} did not answer within {}",
                self.server,
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

/// Sorts a lettre error into retry-worthy or not, keeping the server's reply
/// and the cause chain in the message. lettre never puts credentials in its
/// errors, so the message is safe to log.
fn classify(
    err: &lettre::transport::smtp::Error,
    server: &str,
    security: SmtpSecurity,
) -> EmailError {
    let text = error_chain(err);
    if err.is_permanent() {
        EmailError::Permanent(format!("SMTP server {server} rejected the message: {text}"))
    } else if err.is_transient() {
        EmailError::Transient(format!("SMTP server {server} deferred the message: {text}"))
    } else if err.is_timeout() {
        EmailError::Transient(format!("timed out talking to SMTP server {server}: {text}"))
    } else if err.is_tls() {
        EmailError::Transient(format!(
            "TLS with SMTP server {server} failed: {text}; check smtp.security and smtp.port"
        ))
    } else if err.is_client() {
        // The client refused to go on: STARTTLS not offered, no common AUTH
        // mechanism, 8-bit data without 8BITMIME. Retrying will not change that.
        EmailError::Permanent(format!(
            "cannot send through SMTP server {server}: {text}; check the [smtp] settings against what the server offers"
        ))
    } else {
        // Connection refused, reset, unparsable reply, transport shut down;
        // a failed TLS handshake also arrives here as a connection error.
        let hint = match security {
            SmtpSecurity::None => "",
            SmtpSecurity::StartTls | SmtpSecurity::Tls => {
                " (if TLS failed: check smtp.security and smtp.port)"
            }
        };
        EmailError::Transient(format!(
            "could not talk to SMTP server {server}: {text}{hint}"
        ))
    }
}

/// `err`'s message followed by every cause lettre's `Display` leaves out.
fn error_chain(err: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    let mut text = err.to_string();
    // lettre's Display already includes its direct source.
    let mut source = err.source().and_then(|s| s.source());
    while let Some(cause) = source {
        // Nested lettre errors print their own source too; say each cause once.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn reply_text(response: &Response) -> String {
    let lines: Vec<&str> = response.message().collect();
    format!("{} {}", response.code(), lines.join(" "))
        .trim_end()
        .to_owned()
}

/// An e-mail hook as a [`Sink`]: one message per event through `[smtp]`.
#[derive(Debug)]
pub struct EmailSink {
    spec: EmailSpec,
    /// `None` only without `[smtp]`, which the configuration refuses for an
    /// e-mail hook; kept as a failure rather than a panic all the same.
    mailer: Option<Mailer>,
}

impl EmailSink {
    /// A sink sending `spec`'s messages through `mailer`.
    pub fn new(spec: EmailSpec, mailer: Option<Mailer>) -> Self {
        Self { spec, mailer }
    }

    async fn send(&self, d: Delivery<'_>) -> SinkOutcome {
        let result = match &self.mailer {
            None => Err(SinkFailure::new(
                FailureKind::Permanent,
                "SMTP_NOT_CONFIGURED",
                "there is no [smtp] section",
            )),
            Some(mailer) => {
                let doc = d.document.summary_value(self.spec.settings.log_lines);
                mailer
                    .send_event(&self.spec, &doc, &d.document.event.id)
                    .await
                    .map_err(|e| {
                        let kind = if e.is_transient() {
                            FailureKind::Retryable
                        } else {
                            FailureKind::Permanent
                        };
                        SinkFailure::new(kind, e.code(), e.to_string())
                    })
            }
        };
        match result {
            Ok(sent) => SinkOutcome {
                result: Ok(()),
                exit_code: None,
                output: Some(
                    format!(
                        "sent {} \"{}\": {}",
                        sent.message_id, sent.subject, sent.server_reply
                    )
                    .into_bytes(),
                ),
                error_output: None,
            },
            Err(failure) => SinkOutcome {
                result: Err(failure),
                exit_code: None,
                output: None,
                error_output: None,
            },
        }
    }
}

impl Sink for EmailSink {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, SinkOutcome> {
        Box::pin(self.send(delivery))
    }

    fn max_attempt_duration(&self) -> Duration {
        // Connecting, then the whole exchange, each bounded by the timeout.
        self.mailer
            .as_ref()
            .map_or(Duration::ZERO, |m| m.timeout * 2)
    }

    fn summary_log_lines(&self) -> usize {
        self.spec.settings.log_lines
    }

    fn check(&self) -> BoxFuture<'_, Result<String, String>> {
        // The SMTP server itself is `doctor`'s `smtp` check; here, what is
        // particular to this hook.
        let result = match &self.mailer {
            None => Err("there is no [smtp] section".to_owned()),
            Some(_) => self
                .spec
                .settings
                .to
                .iter()
                .find(|to| to.parse::<Mailbox>().is_err())
                .map_or_else(
                    || Ok(format!("e-mail to {}", self.spec.settings.to.join(", "))),
                    |bad| {
                        Err(format!(
                            "`to` address {:?} is not a mailbox",
                            strip_controls(bad)
                        ))
                    },
                ),
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_security_reads_the_config_words() {
        #[derive(Deserialize)]
        struct S {
            security: SmtpSecurity,
        }
        for (word, expected) in [
            ("none", SmtpSecurity::None),
            ("starttls", SmtpSecurity::StartTls),
            ("tls", SmtpSecurity::Tls),
        ] {
            let s: S = toml::from_str(&format!("security = \"{word}\"")).expect("parses");
            assert_eq!(s.security, expected);
        }
        assert!(toml::from_str::<S>("security = \"ssl\"").is_err());
    }

    #[test]
    fn mailer_rejects_bad_settings_naming_the_key() {
        let good = SmtpSettings {
            host: "localhost".into(),
            port: 25,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "steerhook <steerhook@localhost>".into(),
            timeout: Duration::from_secs(5),
        };
        let cases: Vec<(&str, SmtpSettings)> = vec![
            (
                "smtp.from",
                SmtpSettings {
                    from: "not an address".into(),
                    ..good.clone()
                },
            ),
            (
                "smtp.host",
                SmtpSettings {
                    host: " ".into(),
                    ..good.clone()
                },
            ),
            (
                "smtp.port",
                SmtpSettings {
                    port: 0,
                    ..good.clone()
                },
            ),
            (
                "smtp.timeout",
                SmtpSettings {
                    timeout: Duration::ZERO,
                    ..good.clone()
                },
            ),
            (
                "smtp.password",
                SmtpSettings {
                    username: Some("u".into()),
                    ..good.clone()
                },
            ),
            (
                "smtp.username",
                SmtpSettings {
                    password: Some(Secret::new("hunter2")),
                    ..good.clone()
                },
            ),
        ];
        for (key, settings) in cases {
            match Mailer::new(&settings) {
                Err(e @ EmailError::Config { .. }) => {
                    assert!(e.to_string().starts_with(key), "{key}: {e}");
                    assert_eq!(e.code(), "SMTP_CONFIG");
                    assert!(!e.to_string().contains("hunter2"));
                }
                other => panic!("{key}: expected a config error, got {other:?}"),
            }
        }
        // Building never needs a runtime and never connects.
        for security in [
            SmtpSecurity::None,
            SmtpSecurity::StartTls,
            SmtpSecurity::Tls,
        ] {
            assert!(Mailer::new(&SmtpSettings {
                security,
                ..good.clone()
            })
            .is_ok());
        }
    }
}
