//! The operator's commands (SPEC §2): what each reads or changes through the
//! [`crate::store::Store`], what it prints, and its exit code. Every text
//! from outside (ids, payloads, hook output, API answers) is printed through
//! [`crate::terminal::escape`].
//!
//! One module per command: `events` (`events list|show`), `replay` (`replay
//! ID`, `replay --status failed`), `hooks` (`hooks list|pause|resume`),
//! `quarantine` (`quarantine list|show`), `prune`, `doctor`.

mod doctor;
mod events;
mod hooks;
mod prune;
mod quarantine;
mod replay;

pub use doctor::{doctor, doctor_config_failed, MAX_CLOCK_SKEW_SECS};
pub use events::{events_list, events_show, render_event};
pub use hooks::{hooks_list, hooks_set_paused, HOOK_ACTIVITY_WINDOW};
pub use prune::prune;
pub use quarantine::{quarantine_list, quarantine_show};
pub use replay::{replay, replay_failed};

use std::time::SystemTime;

fn now_ms() -> i64 {
    crate::clock::to_unix_ms(SystemTime::now())
}

/// `n` and the noun, in the singular or the plural: "1 delivery", "2 deliveries".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
