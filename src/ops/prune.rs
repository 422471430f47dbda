//! `prune [--older-than D] [--dry-run]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{count, now_ms};
use crate::clock::format_rfc3339_ms;
use crate::store::{Pruned, Store};

/// What `prune` prints.
fn describe(p: &Pruned, cutoff: i64, dry_run: bool) -> String {
    let mut s = format!(
        "{} {} and {} received before {}\n",
        if dry_run { "would delete" } else { "deleted" },
        count(p.events, "finished event", "finished events"),
        count(p.quarantined, "quarantined body", "quarantined bodies"),
        format_rfc3339_ms(cutoff)
    );
    if p.failed_events > 0 {
        s.push_str(&format!(
            "{} of those events had a delivery that failed and was never replayed{}\n",
            p.failed_events,
            if dry_run {
                "; `steerhook replay --status failed` first if its hook still needs it"
            } else {
                ""
            }
        ));
    }
    if dry_run {
        s.push_str("nothing was deleted (--dry-run)\n");
    }
    s
}

/// `prune`.
pub async fn prune(store: &Store, older_than: Duration, dry_run: bool) -> anyhow::Result<ExitCode> {
    let cutoff = now_ms() - older_than.as_millis() as i64;
    let pruned = if dry_run {
        store.count_prunable(cutoff).await
    } else {
        store.prune(cutoff, true).await
    }
    .context("cannot prune")?;
    print!("{}", describe(&pruned, cutoff, dry_run));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_names_the_events_whose_failed_deliveries_go_with_them() {
        let p = Pruned {
            events: 3,
            failed_events: 1,
            quarantined: 1,
        };
        assert_eq!(
            describe(&p, 0, false),
            "deleted 3 finished events and 1 quarantined body received before 1970-01-01T00:00:00.000Z\n\
             1 of those events had a delivery that failed and was never replayed\n"
        );
        assert!(describe(&p, 0, true).starts_with("would delete 3 finished events"));
        assert!(describe(&p, 0, true).ends_with("nothing was deleted (--dry-run)\n"));
    }
}
