//! Prometheus metrics (`GET /metrics`), rendered in the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::QueueCounts;

type Labels = Vec<(&'static str, String)>;

/// The `code` label of API calls that failed with a code steerhook does not know.
pub const OTHER_CODE: &str = "OTHER";

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    webhooks: Family<Labels, Counter>,
    webhook_seconds: Histogram,
    queue_jobs: Family<Labels, Gauge>,
    oldest_due_seconds: Gauge,
    api_calls: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    hook_seconds: Family<Labels, Histogram>,
    auth_faults: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn hook_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("steerhook");
        let webhooks = Family::<Labels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook requests by outcome code",
            webhooks.clone(),
        );
        let webhook_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "webhook_duration_seconds",
            "Time from request to answer on the webhook endpoint",
            webhook_seconds.clone(),
        );
        let queue_jobs = Family::<Labels, Gauge>::default();
        registry.register("queue_jobs", "Jobs by kind and state", queue_jobs.clone());
        let oldest_due_seconds = Gauge::default();
        registry.register(
            "queue_oldest_due_age_seconds",
            "Age of the oldest job that is due and not yet running",
            oldest_due_seconds.clone(),
        );
        let api_calls = Family::<Labels, Counter>::default();
        registry.register(
            "opensteer_api_calls",
            "Opensteer API calls by outcome code",
            api_calls.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "deliveries",
            "Hook delivery attempts by hook and outcome",
            deliveries.clone(),
        );
        let hook_seconds =
            Family::<Labels, Histogram>::new_with_constructor(hook_histogram as fn() -> Histogram);
        registry.register(
            "hook_duration_seconds",
            "Duration of hook attempts",
            hook_seconds.clone(),
        );
        let auth_faults = Counter::default();
        registry.register(
            "opensteer_auth_faults",
            "API calls refused because the API key was rejected",
            auth_faults.clone(),
        );
        Self {
            registry,
            webhooks,
            webhook_seconds,
            queue_jobs,
            oldest_due_seconds,
            api_calls,
            deliveries,
            hook_seconds,
            auth_faults,
        }
    }

    /// Counts a webhook answer.
    pub fn observe_webhook(&self, code: &str, latency: Duration) {
        self.webhooks
            .get_or_create(&vec![("code", code.to_owned())])
            .inc();
        self.webhook_seconds.observe(latency.as_secs_f64());
    }

    /// Counts an API call outcome (`OK` or the error code). A code
    /// steerhook does not know counts as [`OTHER_CODE`], so the API cannot
    /// add series at will; it is logged instead.
    pub fn observe_api_call(&self, code: &str) {
        let label = if code == "OK" || crate::opensteer::is_known_code(code) {
            code
        } else {
            tracing::warn!(
                code,
                "the Opensteer API answered with an error code steerhook does not know;                  counted as code=\"{OTHER_CODE}\" in steerhook_opensteer_api_calls_total"
            );
            OTHER_CODE
        };
        self.api_calls
            .get_or_create(&vec![("code", label.to_owned())])
            .inc();
    }

    /// Counts an API key rejection.
    pub fn observe_auth_fault(&self) {
        self.auth_faults.inc();
    }

    /// Counts a delivery attempt. A `skipped` one (its `match` did not
    /// hold) started no hook, so it adds nothing to the hook's durations.
    pub fn observe_delivery(&self, hook: &str, outcome: &str, took: Duration) {
        self.deliveries
            .get_or_create(&vec![
                ("hook", hook.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        if outcome == crate::store::AttemptOutcome::Skipped.as_str() {
            return;
        }
        self.hook_seconds
            .get_or_create(&vec![("hook", hook.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// Sets the queue gauges from a fresh count.
    pub fn set_queue(&self, counts: &QueueCounts) {
        self.queue_jobs.clear();
        for (kind, state, n) in &counts.by_kind_state {
            self.queue_jobs
                .get_or_create(&vec![
                    ("kind", kind.as_str().to_owned()),
                    ("state", state.as_str().to_owned()),
                ])
                .set(*n);
        }
        self.oldest_due_seconds
            .set(counts.oldest_due_age_ms.unwrap_or(0) / 1000);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_calls_keep_known_codes_and_count_any_other_as_other() {
        let metrics = Metrics::new();
        for code in [
            "OK",
            "CLOUD_RATE_LIMITED",
            "TIMEOUT",
            "HTTP_502",
            "BRAND_NEW_CODE_1",
            "BRAND_NEW_CODE_2",
            "HTTP_5020",
        ] {
            metrics.observe_api_call(code);
        }
        let text = metrics.render();
        for (series, n) in [
            ("code=\"OK\"", 1),
            ("code=\"CLOUD_RATE_LIMITED\"", 1),
            ("code=\"TIMEOUT\"", 1),
            ("code=\"HTTP_502\"", 1),
            ("code=\"OTHER\"", 3),
        ] {
            let line = format!("steerhook_opensteer_api_calls_total{{{series}}} {n}");
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("BRAND_NEW"), "{text}");
        assert!(!text.contains("HTTP_5020"), "{text}");
    }
}
