//! `quarantine list` and `quarantine show ID`: the signed bodies refused
//! with `PAYLOAD_INVALID` (SPEC §4 step 6), kept for inspection.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::Engine as _;

use crate::clock::format_rfc3339_ms;
use crate::store::{QuarantinedDetail, Store};
use crate::terminal::{escape, escape_lines};

/// `quarantine list`.
pub async fn quarantine_list(store: &Store, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let bodies = store
        .list_quarantine(limit.clamp(1, 10_000))
        .await
        .context("cannot read the quarantine")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&bodies)?);
        return Ok(ExitCode::SUCCESS);
    }
    if bodies.is_empty() {
        println!("no quarantined bodies");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 3]> = bodies
        .iter()
        .map(|b| {
            [
                b.id.to_string(),
                escape(b.client_addr.as_deref().unwrap_or("?")).into_owned(),
                escape(&b.reason).into_owned(),
            ]
        })
        .collect();
    let width = |c: usize, min: usize| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .max()
            .unwrap_or(min)
            .max(min)
    };
    let (w_id, w_from) = (width(0, 2), width(1, 4));
    println!(
        "{:<w_id$}  {:<24}  {:<w_from$}  {:>9}  REASON",
        "ID", "RECEIVED", "FROM", "BYTES"
    );
    for (b, [id, from, reason]) in bodies.iter().zip(&rows) {
        println!(
            "{id:<w_id$}  {:<24}  {from:<w_from$}  {:>9}  {reason}",
            format_rfc3339_ms(b.received_at_ms),
            b.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `quarantine show` for a terminal: the body as text, escaped.
pub fn render_quarantined(q: &QuarantinedDetail) -> String {
    let mut s = String::new();
    let b = &q.summary;
    let _ = writeln!(s, "quarantined body {}", b.id);
    let _ = writeln!(
        s,
        "received  {} from {}",
        format_rfc3339_ms(b.received_at_ms),
        escape(b.client_addr.as_deref().unwrap_or("?"))
    );
    if let Some(t) = b.signed_at {
        let _ = writeln!(s, "signed    t={t} (the signature was valid)");
    }
    let _ = writeln!(s, "reason    {}", escape(&b.reason));
    let _ = writeln!(s, "size      {} bytes", b.size);
    match std::str::from_utf8(&q.body) {
        Ok(text) => {
            let _ = writeln!(s, "\nbody\n{}", escape_lines(text));
        }
        Err(_) => {
            let _ = writeln!(
                s,
                "\nbody (not UTF-8: shown with U+FFFD for the bad bytes; --json has it exactly, in base64)\n{}",
                escape_lines(&String::from_utf8_lossy(&q.body))
            );
        }
    }
    s
}

/// `quarantine show ID`.
pub async fn quarantine_show(store: &Store, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let Some(q) = store
        .find_quarantined(id)
        .await
        .context("cannot read the quarantine")?
    else {
        bail!("no quarantined body with id {id}; `steerhook quarantine list` shows them");
    };
    if json {
        let mut value = serde_json::to_value(&q.summary)?;
        // The body as it came, exactly: as text when it is UTF-8, and always in base64.
        value["body"] = std::str::from_utf8(&q.body).map_or(serde_json::Value::Null, |t| {
            serde_json::Value::String(t.to_owned())
        });
        value["bodyBase64"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&q.body));
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render_quarantined(&q));
    }
    Ok(ExitCode::SUCCESS)
}
