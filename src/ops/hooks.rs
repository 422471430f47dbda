//! `hooks list`, `hooks pause NAME`, `hooks resume NAME`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::now_ms;
use crate::config::{HookKind, Settings};
use crate::store::{HookActivity, Store};
use crate::terminal::escape;

/// How far back `hooks list` counts finished deliveries.
pub const HOOK_ACTIVITY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// One line of `hooks list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct HookLine {
    name: String,
    /// shell | email | http; `null` for a hook the database knows but this
    /// configuration does not have.
    kind: Option<&'static str>,
    paused: bool,
    pending: i64,
    running: i64,
    failed_last_24h: i64,
    succeeded_last_24h: i64,
    skipped_last_24h: i64,
}

fn kind_of(kind: &HookKind) -> &'static str {
    match kind {
        HookKind::Shell(_) => "shell",
        HookKind::Email(_) => "email",
        HookKind::Http(_) => "http",
    }
}

/// The configured hooks in file order, then any other the database knows
/// (deliveries of a hook since removed, or paused on another daemon's configuration).
fn hook_lines(settings: &Settings, activity: Vec<HookActivity>) -> Vec<HookLine> {
    let line = |name: &str, kind: Option<&'static str>, a: Option<&HookActivity>| HookLine {
        name: name.to_owned(),
        kind,
        paused: a.is_some_and(|a| a.paused),
        pending: a.map_or(0, |a| a.pending),
        running: a.map_or(0, |a| a.running),
        failed_last_24h: a.map_or(0, |a| a.failed),
        succeeded_last_24h: a.map_or(0, |a| a.succeeded),
        skipped_last_24h: a.map_or(0, |a| a.skipped),
    };
    let mut lines: Vec<HookLine> = settings
        .hooks
        .iter()
        .map(|h| {
            let a = activity.iter().find(|a| a.name == h.name);
            line(&h.name, Some(kind_of(&h.kind)), a)
        })
        .collect();
    for a in &activity {
        let known = settings.hook(&a.name).is_some();
        let anything = a.paused || a.pending + a.running + a.failed + a.succeeded + a.skipped > 0;
        if !known && anything {
            lines.push(line(&a.name, None, Some(a)));
        }
    }
    lines
}

/// `hooks list`.
pub async fn hooks_list(
    store: &Store,
    settings: &Settings,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let since = now_ms() - HOOK_ACTIVITY_WINDOW.as_millis() as i64;
    let activity = store
        .hook_activity(since)
        .await
        .context("cannot read the hooks' deliveries")?;
    let lines = hook_lines(settings, activity);
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(ExitCode::SUCCESS);
    }
    if lines.is_empty() {
        println!("no hooks configured");
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<String> = lines.iter().map(|l| escape(&l.name).into_owned()).collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<w$}  {:<6}  {:<6}  {:>7}  {:>7}  {:>10}  {:>13}  {:>11}",
        "NAME",
        "KIND",
        "PAUSED",
        "PENDING",
        "RUNNING",
        "FAILED 24H",
        "SUCCEEDED 24H",
        "SKIPPED 24H"
    );
    for (l, name) in lines.iter().zip(&names) {
        println!(
            "{name:<w$}  {:<6}  {:<6}  {:>7}  {:>7}  {:>10}  {:>13}  {:>11}",
            l.kind.unwrap_or("-"),
            if l.paused { "yes" } else { "no" },
            l.pending,
            l.running,
            l.failed_last_24h,
            l.succeeded_last_24h,
            l.skipped_last_24h
        );
    }
    if lines.iter().any(|l| l.kind.is_none()) {
        println!("(kind - : not in this configuration)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `hooks pause NAME` (`paused` true) and `hooks resume NAME`.
pub async fn hooks_set_paused(
    store: &Store,
    settings: &Settings,
    name: String,
    paused: bool,
) -> anyhow::Result<ExitCode> {
    if settings.hook(&name).is_none() {
        bail!(
            "no hook named {:?} in the configuration; `steerhook hooks list` shows them",
            escape(&name)
        );
    }
    // Counted before the resume: a daemon may start them the moment it is done.
    let waiting = if paused {
        0
    } else {
        let since = now_ms() - HOOK_ACTIVITY_WINDOW.as_millis() as i64;
        store
            .hook_activity(since)
            .await
            .context("cannot read the hook's deliveries")?
            .into_iter()
            .find(|a| a.name == name)
            .map_or(0, |a| a.pending)
    };
    let changed = store
        .set_hook_paused(name.clone(), paused)
        .await
        .context("cannot change the hook's pause")?;
    let shared = if store.is_shared() {
        "no daemon on this database starts"
    } else {
        "`steerhook serve` starts none of"
    };
    match (paused, changed) {
        (true, true) => println!(
            "hook {name} paused: {shared} its deliveries until `steerhook hooks resume {name}`; \
             running ones finish, and events are still accepted and queued"
        ),
        (true, false) => println!("hook {name} was already paused"),
        (false, true) => println!(
            "hook {name} resumed: {} within a second, oldest first",
            super::count(
                waiting as usize,
                "waiting delivery starts",
                "waiting deliveries start"
            )
        ),
        (false, false) => println!(
            "hook {name} was not paused ({} waiting)",
            super::count(waiting as usize, "delivery", "deliveries")
        ),
    }
    Ok(ExitCode::SUCCESS)
}
