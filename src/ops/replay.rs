//! `replay ID [--hook NAME]` and `replay --status failed`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{count, now_ms};
use crate::config::Settings;
use crate::store::{BulkReplayReport, FailedDeliveries, Store};
use crate::terminal::escape;

/// The hook `name`, if the configuration has it.
fn configured_hook(settings: &Settings, name: &str) -> anyhow::Result<String> {
    if settings.hook(name).is_none() {
        bail!(
            "no hook named {:?} in the configuration; `steerhook hooks list` shows them",
            escape(name)
        );
    }
    Ok(name.to_owned())
}

/// `replay ID [--hook NAME]`.
pub async fn replay(
    store: &Store,
    settings: &Settings,
    id: String,
    hook: Option<String>,
) -> anyhow::Result<ExitCode> {
    let ev = store
        .find_event(id.clone())
        .await?
        .with_context(|| format!("no event with id {:?}", escape(&id)))?;
    let hooks: Vec<String> = match &hook {
        Some(h) => vec![configured_hook(settings, h)?],
        None => settings
            .hooks
            .iter()
            .filter(|h| h.events.iter().any(|e| e.as_str() == ev.event_type))
            .map(|h| h.name.clone())
            .collect(),
    };
    if hooks.is_empty() {
        bail!(
            "no configured hook receives {}; nothing to replay",
            escape(&ev.event_type)
        );
    }
    let enrich = settings.opensteer.is_some();
    let report = store
        .replay(ev.seq, hooks, enrich, now_ms())
        .await
        .context("cannot queue the replay")?;
    let id = escape(&id);
    if report.refetch {
        println!("the run is fetched again first (the earlier fetch failed)");
    }
    for h in &report.queued {
        println!("queued {id} for hook {h}");
    }
    for h in &report.running {
        println!("hook {h} is delivering {id} right now; left alone");
    }
    println!("a running `steerhook serve` picks it up within a second");
    Ok(ExitCode::SUCCESS)
}

/// `replay --status failed [--hook NAME] [--since DURATION] [--dry-run]`:
/// every delivery that ended failed, queued again in one transaction.
pub async fn replay_failed(
    store: &Store,
    settings: &Settings,
    hook: Option<String>,
    since: Option<Duration>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let hooks = match &hook {
        Some(h) => vec![configured_hook(settings, h)?],
        None => settings.hooks.iter().map(|h| h.name.clone()).collect(),
    };
    if hooks.is_empty() {
        bail!("no hook is configured; nothing to replay");
    }
    let filter = FailedDeliveries {
        hooks,
        since: since.map(|d| now_ms() - d.as_millis() as i64),
    };
    let enrich = settings.opensteer.is_some();
    let report = if dry_run {
        store.count_failed(filter, enrich).await
    } else {
        store.replay_failed(filter, enrich, now_ms()).await
    }
    .context("cannot queue the failed deliveries")?;
    print!(
        "{}",
        describe_bulk_replay(&report, hook.as_deref(), since, dry_run)
    );
    Ok(ExitCode::SUCCESS)
}

/// What `replay --status failed` prints.
fn describe_bulk_replay(
    report: &BulkReplayReport,
    hook: Option<&str>,
    since: Option<Duration>,
    dry_run: bool,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let scope = format!(
        "{}{}",
        hook.map(|h| format!(" of hook {h}")).unwrap_or_default(),
        since
            .map(|d| format!(
                " of events received within {}",
                humantime::format_duration(d)
            ))
            .unwrap_or_default()
    );
    let n = report.deliveries();
    if n == 0 {
        let _ = writeln!(s, "no failed deliveries{scope}; nothing to replay");
    } else {
        let _ = writeln!(
            s,
            "{} {}{scope} ({}) again:",
            if dry_run { "would queue" } else { "queued" },
            count(n, "failed delivery", "failed deliveries"),
            count(report.events, "event", "events"),
        );
        for (h, k) in &report.by_hook {
            let _ = writeln!(s, "  {h:<20} {k}");
        }
        if report.refetch > 0 {
            let _ = writeln!(
                s,
                "{} fetched again first (the earlier fetch failed)",
                count(report.refetch, "run is", "runs are")
            );
        }
    }
    if report.other_hooks > 0 {
        let _ = writeln!(
            s,
            "{} of hooks not in the configuration left alone (add the hook back, then replay)",
            count(report.other_hooks, "failed delivery", "failed deliveries")
        );
    }
    if n > 0 {
        let _ = writeln!(
            s,
            "{}",
            if dry_run {
                "nothing was changed (--dry-run)"
            } else {
                "a running `steerhook serve` picks them up within a second"
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_replay_says_how_many_of_which_hook_and_what_it_did() {
        let report = BulkReplayReport {
            by_hook: vec![("etl".into(), 3), ("mail".into(), 1)],
            events: 3,
            refetch: 1,
            other_hooks: 2,
        };
        let text = describe_bulk_replay(&report, None, Some(Duration::from_secs(2 * 86_400)), true);
        assert_eq!(
            text,
            "would queue 4 failed deliveries of events received within 2days (3 events) again:\n  \
             etl                  3\n  mail                 1\n\
             1 run is fetched again first (the earlier fetch failed)\n\
             2 failed deliveries of hooks not in the configuration left alone (add the hook back, then replay)\n\
             nothing was changed (--dry-run)\n"
        );
        let none = describe_bulk_replay(&BulkReplayReport::default(), Some("etl"), None, false);
        assert_eq!(
            none,
            "no failed deliveries of hook etl; nothing to replay\n"
        );
    }
}
