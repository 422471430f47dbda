//! A small, real SMTP server for tests: plain TCP on 127.0.0.1, one tokio
//! task per connection, every accepted message recorded.
//!
//! It speaks enough of RFC 5321 for lettre: greeting, EHLO/HELO, AUTH PLAIN
//! and LOGIN, MAIL, RCPT, DATA (with dot-unstuffing), RSET, NOOP, QUIT.
//! Replies to RCPT and DATA can be set to a rejection, and the server can be
//! stopped (connections refused) and restarted on the same port.
//!
//! ```ignore
//! let server = SmtpServer::start().await;
//! // ... send to server.port() ...
//! let messages = server.wait_for_messages(1, Duration::from_secs(5)).await;
//! assert_eq!(messages[0].header("Subject").as_deref(), Some("hello"));
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One message the server accepted (answered 250 to its DATA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The `MAIL FROM:` address, without angle brackets.
    pub mail_from: String,
    /// Every accepted `RCPT TO:` address, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message as received, dot-unstuffed, lines joined with CRLF.
    pub data: String,
}

impl ReceivedMessage {
    /// The header block, up to the first empty line.
    pub fn head(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or(self.data.as_str(), |(head, _)| head)
    }

    /// The body, after the first empty line.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    /// Every header as (name, unfolded value), in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in self.head().split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.to_owned(), value.trim_start().to_owned()));
            }
        }
        headers
    }

    /// The first header called `name` (any case), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Credentials a client sent with AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    /// The authentication identity.
    pub username: String,
    /// The password, as sent.
    pub password: String,
}

#[derive(Default)]
struct State {
    messages: Vec<ReceivedMessage>,
    auths: Vec<AuthAttempt>,
    rcpt_reply: Option<String>,
    data_reply: Option<String>,
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    /// The number of recorded messages, so waiters wake on each new one.
    count: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection task must not hide what was recorded.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running (or stopped) test SMTP server. Dropping it stops it.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Option<JoinSet<()>>,
}

impl SmtpServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test SMTP server");
        let addr = listener.local_addr().expect("local addr");
        let (count, _) = watch::channel(0);
        let mut server = SmtpServer {
            addr,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                count,
            }),
            tasks: None,
        };
        server.serve(listener);
        server
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on (stays the same across `stop`/`restart`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether it is accepting connections.
    pub fn is_running(&self) -> bool {
        self.tasks.is_some()
    }

    /// Closes the listener and every open connection: connecting to the
    /// port is refused until [`SmtpServer::restart`]. Recorded messages stay.
    pub async fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // tokio sets SO_REUSEADDR, so the port can be bound again at once.
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// From now on RCPT TO is answered with `reply`, e.g. `550 5.1.1 mailbox unavailable`.
    pub fn reject_rcpt(&self, reply: &str) {
        self.shared.lock().rcpt_reply = Some(reply.to_owned());
    }

    /// From now on the end of DATA is answered with `reply`, e.g. `451 4.3.0 try later`.
    pub fn reject_data(&self, reply: &str) {
        self.shared.lock().data_reply = Some(reply.to_owned());
    }

    /// Undoes `reject_rcpt` and `reject_data`.
    pub fn accept_all(&self) {
        let mut state = self.shared.lock();
        state.rcpt_reply = None;
        state.data_reply = None;
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.lock().messages.clone()
    }

    /// Every AUTH exchange seen so far.
    pub fn auths(&self) -> Vec<AuthAttempt> {
        self.shared.lock().auths.clone()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Waits until at least `n` messages were accepted and returns them all;
    /// panics, showing what did arrive, if that takes longer than `timeout`.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let mut count = self.shared.count.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await;
        if reached.is_err() {
            panic!(
                "expected {n} message(s) within {timeout:?}, got: {:#?}",
                self.messages()
            );
        }
        self.messages()
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let shared = Arc::clone(&self.shared);
        // The accept loop spawns into its own JoinSet: aborting the loop
        // drops that set, which aborts every connection it started.
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        shared.lock().connections += 1;
                        let shared = Arc::clone(&shared);
                        connections.spawn(async move {
                            // A client hanging up mid-session is not a test failure.
                            let _ = session(stream, shared).await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        self.tasks = Some(tasks);
    }
}

async fn reply(writer: &mut OwnedWriteHalf, line: &str) -> io::Result<()> {
    // One write per reply: two small writes would meet Nagle and delayed
    // ACKs and cost ~40 ms per command.
    writer.write_all(format!("{line}\r\n").as_bytes()).await?;
    writer.flush().await
}

/// The address inside `FROM:<a@b> SIZE=1` / `TO:<a@b>`.
fn path_arg(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(open), Some(close)) if open < close => arg[open + 1..close].to_owned(),
        _ => arg
            .split_once(':')
            .map_or(arg, |(_, rest)| rest)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    reply(&mut writer, "220 test-smtp ESMTP ready").await?;

    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                writer
                    .write_all(
                        b"250-test-smtp greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                          250-AUTH PLAIN LOGIN\r\n250 PIPELINING\r\n",
                    )
                    .await?;
                writer.flush().await?;
            }
            "HELO" => reply(&mut writer, "250 test-smtp").await?,
            "AUTH" => {
                let mut parts = arg.split_whitespace();
                let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
                let initial = parts.next().map(str::to_owned);
                let attempt = match mechanism.as_str() {
                    "PLAIN" => {
                        let encoded = match initial {
                            Some(i) => i,
                            None => {
                                reply(&mut writer, "334 ").await?;
                                read_line(&mut reader).await?
                            }
                        };
                        let decoded = base64_decode(&encoded).unwrap_or_default();
                        let mut fields = decoded.split(|b| *b == 0);
                        let _authz = fields.next();
                        let user = fields.next().unwrap_or_default();
                        let pass = fields.next().unwrap_or_default();
                        Some(AuthAttempt {
                            mechanism,
                            username: String::from_utf8_lossy(user).into_owned(),
                            password: String::from_utf8_lossy(pass).into_owned(),
                        })
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(i) => i,
                            None => {
                                reply(&mut writer, "334 VXNlcm5hbWU6").await?;
                                read_line(&mut reader).await?
                            }
                        };
                        reply(&mut writer, "334 UGFzc3dvcmQ6").await?;
                        let pass = read_line(&mut reader).await?;
                        let text = |s: &str| {
                            String::from_utf8_lossy(&base64_decode(s).unwrap_or_default())
                                .into_owned()
                        };
                        Some(AuthAttempt {
                            mechanism,
                            username: text(&user),
                            password: text(&pass),
                        })
                    }
                    _ => None,
                };
                match attempt {
                    Some(attempt) => {
                        shared.lock().auths.push(attempt);
                        reply(&mut writer, "235 2.7.0 Authentication successful").await?;
                    }
                    None => reply(&mut writer, "504 5.5.4 mechanism not supported").await?,
                }
            }
            "MAIL" => {
                mail_from = Some(path_arg(arg));
                rcpt_to.clear();
                reply(&mut writer, "250 2.1.0 ok").await?;
            }
            "RCPT" => {
                let rejection = shared.lock().rcpt_reply.clone();
                if mail_from.is_none() {
                    reply(&mut writer, "503 5.5.1 MAIL first").await?;
                } else if let Some(rejection) = rejection {
                    reply(&mut writer, &rejection).await?;
                } else {
                    rcpt_to.push(path_arg(arg));
                    reply(&mut writer, "250 2.1.5 ok").await?;
                }
            }
            "DATA" => {
                if mail_from.is_none() || rcpt_to.is_empty() {
                    reply(&mut writer, "503 5.5.1 need MAIL and RCPT first").await?;
                    continue;
                }
                reply(&mut writer, "354 end data with <CR><LF>.<CR><LF>").await?;
                let mut data_lines: Vec<String> = Vec::new();
                loop {
                    let mut raw = String::new();
                    if reader.read_line(&mut raw).await? == 0 {
                        return Ok(());
                    }
                    let text = raw.trim_end_matches(['\r', '\n']);
                    if text == "." {
                        break;
                    }
                    // RFC 5321 §4.5.2: a leading dot was doubled by the client.
                    data_lines.push(text.strip_prefix('.').unwrap_or(text).to_owned());
                }
                let rejection = shared.lock().data_reply.clone();
                if let Some(rejection) = rejection {
                    reply(&mut writer, &rejection).await?;
                } else {
                    let message = ReceivedMessage {
                        mail_from: mail_from.take().unwrap_or_default(),
                        rcpt_to: std::mem::take(&mut rcpt_to),
                        data: data_lines.join("\r\n"),
                    };
                    let id = {
                        let mut state = shared.lock();
                        state.messages.push(message);
                        state.messages.len()
                    };
                    shared.count.send_replace(id);
                    reply(&mut writer, &format!("250 2.0.0 ok queued as TEST{id}")).await?;
                }
                mail_from = None;
                rcpt_to.clear();
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                reply(&mut writer, "250 2.0.0 ok").await?;
            }
            "NOOP" => reply(&mut writer, "250 2.0.0 ok").await?,
            "QUIT" => {
                reply(&mut writer, "221 2.0.0 bye").await?;
                return Ok(());
            }
            _ => reply(&mut writer, "502 5.5.2 command not recognized").await?,
        }
    }
}

async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Standard base64 (with or without padding); `None` on a foreign character.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in input.trim().bytes().filter(|c| *c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}
