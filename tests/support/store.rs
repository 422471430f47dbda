//! What the storage interface's tests hand a `Store` (tests/store): events,
//! routing, claims and attempt records, all at [`T0`].

use steerhook::domain::{EventType, IncomingEvent};
use steerhook::store::{
    AttemptOutcome, AttemptRecord, ClaimFilter, ClaimedJob, HookConfig, NewEvent, Routing, Store,
};

/// 2026-01-01T00:00:00Z ([`super::NOW_SECS`]), unix ms.
pub const T0: i64 = super::NOW_SECS as i64 * 1000;
/// A lease long enough for any test.
pub const LEASE_MS: i64 = 60_000;

/// Event `n`: `evt_<n>`, a `run.succeeded` of `run_<n>`, received a little
/// before [`T0`].
pub fn event(n: usize) -> NewEvent {
    NewEvent {
        event: IncomingEvent {
            id: format!("evt_{n}"),
            sender_id: Some(format!("evt_{n}")),
            event_type: EventType::RunSucceeded,
            run_id: format!("run_{n}"),
            signed_at: (T0 / 1000) as u64,
            body: format!(
                r#"{{"type":"run.succeeded","id":"evt_{n}","data":{{"runId":"run_{n}"}}}}"#
            )
            .into_bytes(),
        },
        // Received (so due) a little before T0, where the tests claim.
        received_at: T0 - 1_000 + n as i64,
        client_addr: Some("127.0.0.1".into()),
    }
}

/// Routing with a fetch first and the given hooks on `run.succeeded`.
pub fn routing(enrich: bool, hooks: &[&str]) -> Routing {
    Routing {
        enrich,
        hooks: hooks
            .iter()
            .map(|h| ((*h).to_owned(), vec![EventType::RunSucceeded]))
            .collect(),
    }
}

/// A claim at `now` that may take anything of `hooks` (concurrency 1 each).
pub fn claim_at(now: i64, hooks: &[&str]) -> ClaimFilter {
    ClaimFilter {
        now,
        lease_ms: LEASE_MS,
        busy_hooks: Vec::new(),
        fetch_allowed: true,
        deliveries_allowed: true,
        in_flight: Vec::new(),
        hook_limits: hooks.iter().map(|h| ((*h).to_owned(), 1)).collect(),
    }
}

/// Claims the next job at `now` that [`claim_at`] allows.
pub async fn claim(store: &Store, now: i64, hooks: &[&str]) -> Option<ClaimedJob> {
    store.claim_due_job(claim_at(now, hooks)).await.unwrap()
}

/// A successful attempt started at `started_at`.
pub fn ok(started_at: i64) -> AttemptRecord {
    AttemptRecord {
        started_at,
        duration_ms: 1,
        outcome: AttemptOutcome::Ok,
        error_code: None,
        error: None,
        exit_code: Some(0),
        stdout: Some(b"out".to_vec()),
        stderr: None,
        enrichment: None,
    }
}

/// A failed attempt (exit 1) that ended as `outcome`.
pub fn failed(started_at: i64, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        outcome,
        error_code: Some("EXIT_NONZERO".into()),
        error: Some("hook exited with code 1".into()),
        exit_code: Some(1),
        ..ok(started_at)
    }
}

/// Makes the hooks' rows a shared database locks to claim (serve does it at start).
pub async fn register(store: &Store, hooks: &[&str]) {
    let configs = hooks
        .iter()
        .map(|h| HookConfig {
            name: (*h).to_owned(),
            config_hash: "same".into(),
        })
        .collect();
    store
        .register_hooks(configs, "test-daemon".into(), T0)
        .await
        .unwrap();
}
