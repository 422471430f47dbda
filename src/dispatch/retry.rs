//! The retry policy: from how an attempt ended to where its job goes next.
//! Pure functions of their inputs (the random draw included), so every rule
//! is unit-tested here.

use std::time::Duration;

use crate::config::QueueSettings;
use crate::hooks::{FailureKind, SinkFailure};
use crate::opensteer::ErrorClass;
use crate::store::{AttemptOutcome, JobNext};

/// Full-jitter exponential backoff: the delay before attempt `attempt + 1`
/// is drawn uniformly from `[0, min(max, base * 2^(attempt-1))]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first draw.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The backoff of `[queue]`.
    pub fn of(queue: &QueueSettings) -> Self {
        Self {
            base: queue.backoff_base,
            max: queue.backoff_max,
        }
    }

    /// The ceiling of the draw after attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let base = self.base.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(40));
        Duration::from_millis(exp.min(self.max.as_millis() as u64))
    }

    /// The delay after attempt `attempt`, for a uniform `draw` in `[0, 1]`.
    pub fn delay(&self, attempt: u32, draw: f64) -> Duration {
        self.ceiling(attempt).mul_f64(draw.clamp(0.0, 1.0))
    }
}

/// What a delivery attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How the attempt is recorded.
    pub outcome: AttemptOutcome,
    /// Where the job goes.
    pub next: JobNext,
}

/// The next step of a delivery after attempt `attempt` of `max_attempts`
/// failed with `failure`, at `now` (unix ms). A wait the far side asked for
/// is honoured up to `retry_after_max`, and never shortened by the backoff.
pub fn after_delivery_failure(
    failure: &SinkFailure,
    attempt: u32,
    max_attempts: u32,
    now: i64,
    backoff: Backoff,
    retry_after_max: Duration,
    draw: f64,
) -> Step {
    match failure.kind {
        FailureKind::Interrupted => Step {
            outcome: AttemptOutcome::Interrupted,
            next: JobNext::RetryAt(now),
        },
        FailureKind::Permanent => Step {
            outcome: AttemptOutcome::Failed,
            next: JobNext::Failed,
        },
        FailureKind::Retryable if attempt >= max_attempts => Step {
            outcome: AttemptOutcome::Failed,
            next: JobNext::Failed,
        },
        FailureKind::Retryable => {
            let wait = match failure.retry_after {
                Some(asked) => asked.min(retry_after_max),
                None => backoff.delay(attempt, draw),
            };
            Step {
                outcome: AttemptOutcome::Retry,
                next: JobNext::RetryAt(now + wait.as_millis() as i64),
            }
        }
    }
}

/// What a failed fetch leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStep {
    /// How the attempt is recorded, and where the job goes.
    pub step: Step,
    /// Every fetch waits until then (unix ms): the API's limit or its
    /// refusal of our key is the account's, not this run's.
    pub pause_fetches_until: Option<i64>,
    /// Why: what the log line says.
    pub reason: FetchFailureReason,
}

/// Why a fetch attempt failed, as far as the next step goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailureReason {
    /// Transient; retried with backoff.
    Transient,
    /// The API asked us to slow down.
    RateLimited,
    /// The API refused our key (or `base_url` redirects): retried slowly
    /// until the operator fixes it.
    AuthFault,
    /// The request will never succeed.
    Terminal,
    /// The attempts ran out.
    GaveUp,
}

/// The fetch settings the policy needs.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// Backoff between transient failures.
    pub backoff: Backoff,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Largest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// Wait between attempts while the key is refused.
    pub auth_retry: Duration,
}

/// The next step of a fetch after attempt `attempt` failed with an error of
/// `class`, at `now` (unix ms).
pub fn after_fetch_failure(
    class: &ErrorClass,
    attempt: u32,
    now: i64,
    policy: FetchPolicy,
    draw: f64,
) -> FetchStep {
    let retry_at = |wait: Duration| Step {
        outcome: AttemptOutcome::Retry,
        next: JobNext::RetryAt(now + wait.as_millis() as i64),
    };
    let give_up = |reason| FetchStep {
        step: Step {
            outcome: AttemptOutcome::Failed,
            next: JobNext::Failed,
        },
        pause_fetches_until: None,
        reason,
    };
    let more = attempt < policy.max_attempts;
    match class {
        ErrorClass::Retry if more => FetchStep {
            step: retry_at(policy.backoff.delay(attempt, draw)),
            pause_fetches_until: None,
            reason: FetchFailureReason::Transient,
        },
        ErrorClass::RetryAfter(after) if more => {
            let wait = after
                .unwrap_or_else(|| policy.backoff.delay(attempt, draw))
                .min(policy.retry_after_max);
            FetchStep {
                step: retry_at(wait),
                pause_fetches_until: Some(now + wait.as_millis() as i64),
                reason: FetchFailureReason::RateLimited,
            }
        }
        // Never gives up: fixing the key and restarting resumes every event.
        ErrorClass::AuthFault => FetchStep {
            step: retry_at(policy.auth_retry),
            pause_fetches_until: Some(now + policy.auth_retry.as_millis() as i64),
            reason: FetchFailureReason::AuthFault,
        },
        ErrorClass::Terminal => give_up(FetchFailureReason::Terminal),
        ErrorClass::Retry | ErrorClass::RetryAfter(_) => give_up(FetchFailureReason::GaveUp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn backoff() -> Backoff {
        Backoff {
            base: 5 * SEC,
            max: 60 * SEC,
        }
    }

    fn failure(kind: FailureKind) -> SinkFailure {
        SinkFailure::new(kind, "X", "x")
    }

    #[test]
    fn the_backoff_ceiling_doubles_per_attempt_up_to_the_maximum() {
        let b = backoff();
        let ceilings: Vec<u64> = (1..=6).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [5, 10, 20, 40, 60, 60]);
        assert_eq!(b.ceiling(10_000), 60 * SEC, "no overflow on huge attempts");
        assert_eq!(b.delay(3, 0.5), 10 * SEC);
        assert_eq!(b.delay(3, 7.0), 20 * SEC, "a draw past 1 is clamped");
    }

    #[test]
    fn a_retryable_delivery_failure_retries_until_the_last_attempt() {
        let s = after_delivery_failure(
            &failure(FailureKind::Retryable),
            2,
            3,
            1_000,
            backoff(),
            SEC,
            1.0,
        );
        assert_eq!(s.outcome, AttemptOutcome::Retry);
        assert_eq!(s.next, JobNext::RetryAt(1_000 + 10_000));
        let s = after_delivery_failure(
            &failure(FailureKind::Retryable),
            3,
            3,
            1_000,
            backoff(),
            SEC,
            1.0,
        );
        assert_eq!(
            (s.outcome, s.next),
            (AttemptOutcome::Failed, JobNext::Failed)
        );
    }

    #[test]
    fn a_permanent_delivery_failure_fails_at_once_and_an_interrupted_one_runs_again_now() {
        let s = after_delivery_failure(
            &failure(FailureKind::Permanent),
            1,
            5,
            1_000,
            backoff(),
            SEC,
            0.0,
        );
        assert_eq!(
            (s.outcome, s.next),
            (AttemptOutcome::Failed, JobNext::Failed)
        );
        let s = after_delivery_failure(
            &failure(FailureKind::Interrupted),
            5,
            5,
            1_000,
            backoff(),
            SEC,
            0.0,
        );
        assert_eq!(
            (s.outcome, s.next),
            (AttemptOutcome::Interrupted, JobNext::RetryAt(1_000))
        );
    }

    #[test]
    fn a_delivery_retry_after_is_honoured_up_to_its_maximum() {
        let mut f = failure(FailureKind::Retryable);
        f.retry_after = Some(2 * SEC);
        let s = after_delivery_failure(&f, 1, 5, 0, backoff(), 60 * SEC, 0.0);
        assert_eq!(s.next, JobNext::RetryAt(2_000));
        f.retry_after = Some(3_600 * SEC);
        let s = after_delivery_failure(&f, 1, 5, 0, backoff(), 60 * SEC, 0.0);
        assert_eq!(s.next, JobNext::RetryAt(60_000));
    }

    fn policy() -> FetchPolicy {
        FetchPolicy {
            backoff: backoff(),
            max_attempts: 3,
            retry_after_max: 30 * SEC,
            auth_retry: 300 * SEC,
        }
    }

    #[test]
    fn a_rate_limited_fetch_waits_as_asked_and_pauses_every_fetch() {
        let s = after_fetch_failure(&ErrorClass::RetryAfter(Some(7 * SEC)), 1, 0, policy(), 0.0);
        assert_eq!(s.step.next, JobNext::RetryAt(7_000));
        assert_eq!(s.pause_fetches_until, Some(7_000));
        assert_eq!(s.reason, FetchFailureReason::RateLimited);
        let capped = after_fetch_failure(
            &ErrorClass::RetryAfter(Some(999 * SEC)),
            1,
            0,
            policy(),
            0.0,
        );
        assert_eq!(capped.step.next, JobNext::RetryAt(30_000));
    }

    #[test]
    fn an_auth_fault_never_gives_up_and_a_terminal_error_gives_up_at_once() {
        let s = after_fetch_failure(&ErrorClass::AuthFault, 1_000, 0, policy(), 0.0);
        assert_eq!(s.step.next, JobNext::RetryAt(300_000));
        assert_eq!(s.reason, FetchFailureReason::AuthFault);
        let s = after_fetch_failure(&ErrorClass::Terminal, 1, 0, policy(), 0.0);
        assert_eq!(
            (s.step.next, s.reason),
            (JobNext::Failed, FetchFailureReason::Terminal)
        );
    }

    #[test]
    fn a_transient_fetch_failure_gives_up_after_the_last_attempt() {
        let s = after_fetch_failure(&ErrorClass::Retry, 2, 0, policy(), 1.0);
        assert_eq!(s.step.next, JobNext::RetryAt(10_000));
        let s = after_fetch_failure(&ErrorClass::Retry, 3, 0, policy(), 1.0);
        assert_eq!(
            (s.step.next, s.reason),
            (JobNext::Failed, FetchFailureReason::GaveUp)
        );
    }
}
