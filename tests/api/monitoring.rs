//! The shipped Prometheus alert rules (`deploy/prometheus/steerhook.rules.yml`)
//! and Grafana dashboard (`deploy/grafana/steerhook.json`) against what the
//! daemon really exports: the real app, driven through every outcome the
//! rules and panels look at (accepted, duplicate, bad signatures, a 503, a
//! delivery that succeeds, one that fails, one still running, a fetch
//! refused with CLOUD_AUTH_FAILED), then scraped. Every metric, label and
//! literal label value they use must be in that scrape, so a renamed
//! metric or label breaks this test rather than an operator's alert.
//! `promtool` checks the rules' syntax and runs their unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::daemon::read_repo;
use crate::support::prelude::*;
use crate::support::tools::require_tool;

const RULES: &str = "deploy/prometheus/steerhook.rules.yml";
const RULES_TEST: &str = "deploy/prometheus/steerhook.rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/steerhook.json";

/// Labels Prometheus adds to every scraped series (the target's), which a
/// scrape of /metrics therefore never shows.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];
/// Series Prometheus makes itself for every target: `up` (0 when the
/// scrape failed), which SteerhookDown and SteerhookAbsent read.
const SYNTHETIC_METRICS: [&str; 1] = ["up"];

/// One scrape: metric (sample) name -> the label sets of its series.
#[derive(Debug, Default)]
struct Scrape {
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Scrape {
    /// Parses the text exposition (OpenMetrics or Prometheus text format).
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let mut labels = BTreeMap::new();
            if line[name_end..].starts_with('{') {
                let mut rest = &line[name_end + 1..];
                while let Some((key, after)) = rest.split_once("=\"") {
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let mut end = after.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, escaped)) = chars.next() {
                                    value.push(if escaped == 'n' { '\n' } else { escaped });
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
                    rest = &after[end..];
                    if rest.starts_with('}') {
                        break;
                    }
                }
            }
            scrape
                .series
                .entry(name.to_owned())
                .or_default()
                .push(labels);
        }
        scrape
    }

    fn has_metric(&self, name: &str) -> bool {
        self.series.contains_key(name)
    }

    fn has_label(&self, metric: &str, label: &str) -> bool {
        self.series
            .get(metric)
            .is_some_and(|all| all.iter().any(|s| s.contains_key(label)))
    }

    fn has_value(&self, metric: &str, label: &str, value: &str) -> bool {
        self.series
            .get(metric)
            .is_some_and(|all| all.iter().any(|s| s.get(label).is_some_and(|v| v == value)))
    }
}

/// `metric{label op "value", ...}` in a PromQL expression.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// What a PromQL expression refers to, read with a small scanner: enough
/// for the expressions we ship (selectors, `by`/`without` lists, functions),
/// not a PromQL parser.
#[derive(Debug, Default)]
struct Uses {
    /// Every metric name.
    metrics: BTreeSet<String>,
    /// Every selector with matchers.
    selectors: Vec<Selector>,
    /// Labels in `by (...)`, `without (...)`, `on (...)`, `label_values(.., l)`.
    grouping: BTreeSet<String>,
}

const PROMQL_WORDS: [&str; 24] = [
    "sum",
    "by",
    "without",
    "on",
    "ignoring",
    "rate",
    "increase",
    "deriv",
    "delta",
    "histogram_quantile",
    "absent",
    "offset",
    "unless",
    "and",
    "or",
    "max",
    "min",
    "avg",
    "count",
    "label_values",
    "max_over_time",
    "min_over_time",
    "bool",
    "group_left",
];

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn promql_uses(expr: &str) -> Uses {
    let mut uses = Uses::default();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // A string outside a selector (e.g. in label_replace): skip it.
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            // A range or subquery: durations, not names.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() {
            // A number or a duration (0.99, 5m): not a name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '$' {
            // A Grafana variable ($job, $__rate_interval).
            i += 1;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            if ["by", "without", "on", "ignoring"].contains(&word.as_str()) && next == Some('(') {
                let close = chars[j..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(chars.len(), |p| j + p);
                let list: String = chars[j + 1..close].iter().collect();
                uses.grouping.extend(
                    list.split(',')
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty()),
                );
                i = close + 1;
            } else if next == Some('(') || PROMQL_WORDS.contains(&word.as_str()) {
                // A function or keyword.
            } else {
                uses.metrics.insert(word.clone());
                if next == Some('{') {
                    let close = chars[j..]
                        .iter()
                        .position(|&c| c == '}')
                        .map_or(chars.len(), |p| j + p);
                    let body: String = chars[j + 1..close].iter().collect();
                    uses.selectors.push(Selector {
                        metric: word,
                        matchers: parse_matchers(&body),
                    });
                    i = close + 1;
                }
            }
        } else {
            i += 1;
        }
    }
    uses
}

/// `a="x", b=~"y|z"` -> [(a, =, x), (b, =~, y|z)].
fn parse_matchers(body: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(q) = rest.find('"') {
        let head = rest[..q].trim().trim_start_matches(',').trim();
        let op_start = head.find(['=', '!']).unwrap_or(head.len());
        let (label, op) = head.split_at(op_start);
        let after = &rest[q + 1..];
        let end = after.find('"').unwrap_or(after.len());
        out.push((
            label.trim().to_owned(),
            op.trim().to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[(end + 1).min(after.len())..];
    }
    out
}

/// Checks `expr` (from `what`) against the scrape; returns the problems.
fn check_expr(scrape: &Scrape, what: &str, expr: &str, legend_labels: &[String]) -> Vec<String> {
    let uses = promql_uses(expr);
    let mut problems = Vec::new();
    let metrics: Vec<&String> = uses
        .metrics
        .iter()
        .filter(|m| !SYNTHETIC_METRICS.contains(&m.as_str()))
        .collect();
    for m in &metrics {
        if !scrape.has_metric(m) {
            problems.push(format!("{what}: metric {m} is not in the scrape"));
        }
    }
    let labelled = |label: &str| {
        TARGET_LABELS.contains(&label) || metrics.iter().any(|m| scrape.has_label(m, label))
    };
    for label in uses.grouping.iter().chain(legend_labels) {
        if !labelled(label) {
            problems.push(format!(
                "{what}: no series of {metrics:?} has the label {label}"
            ));
        }
    }
    for sel in &uses.selectors {
        if SYNTHETIC_METRICS.contains(&sel.metric.as_str()) {
            continue;
        }
        for (label, op, value) in &sel.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !scrape.has_label(&sel.metric, label) {
                problems.push(format!("{what}: {} has no label {label}", sel.metric));
                continue;
            }
            // A literal the series must be able to carry: "x", or "a|b|c".
            let literals: Vec<&str> = match op.as_str() {
                "=" | "!=" => vec![value.as_str()],
                "=~" | "!~"
                    if value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|') =>
                {
                    value.split('|').collect()
                }
                _ => vec![],
            };
            for v in literals.into_iter().filter(|v| !v.contains('$')) {
                if !scrape.has_value(&sel.metric, label, v) {
                    problems.push(format!(
                        "{what}: no {} series has {label}=\"{v}\" in the scrape",
                        sel.metric
                    ));
                }
            }
        }
    }
    problems
}

/// `(alert name, expr)` for each rule of the rules file. A line scanner for
/// the shape we ship (`- alert: X` then `expr: one line` or `expr: |` and
/// an indented block), so the test needs no YAML crate; the count check
/// keeps it from silently reading nothing.
fn rule_exprs(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_owned();
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            let indent = line.len() - trimmed.len();
            let expr = if rest.starts_with('|') || rest.starts_with('>') {
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                block.join("\n")
            } else {
                rest.trim_matches(['\'', '"']).to_owned()
            };
            rules.push((alert.clone(), expr));
        }
        i += 1;
    }
    rules
}

/// Every `expr` with its panel's title and the labels its `legendFormat`
/// names, plus the queries of the dashboard's variables.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default().to_owned();
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            let labels = legend
                .split("{{")
                .skip(1)
                .filter_map(|s| s.split_once("}}"))
                .map(|(l, _)| l.trim().to_owned())
                .collect();
            out.push((format!("panel {title:?}"), expr, labels));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let query = var["query"]
                .as_str()
                .or_else(|| var["query"]["query"].as_str())
                .unwrap_or_default();
            // label_values(metric{...}, label): the label is a grouping.
            let (inner, label) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| {
                    panic!(
                        "variable {}: expected label_values(..), got {query}",
                        var["name"]
                    )
                });
            out.push((
                format!("variable {}", var["name"]),
                inner.to_owned(),
                vec![label.trim().to_owned()],
            ));
        }
    }
    out
}

/// A hook that fails at once and for good (`max_attempts = 1`).
const FAILING_HOOK: &str =
    "[[hook]]\nname = \"failing\"\nkind = \"shell\"\nevents = [\"run.succeeded\"]\n\
     command = [\"/bin/false\"]\nmax_attempts = 1\n";

/// A scrape of the real app after traffic that makes every series the
/// rules and the dashboard use; made once, shared by the tests here.
fn scrape() -> &'static Scrape {
    static SCRAPE: OnceLock<Scrape> = OnceLock::new();
    SCRAPE.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(drive_traffic_and_scrape())
    })
}

async fn drive_traffic_and_scrape() -> Scrape {
    let sandbox = Sandbox::new();
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/runs/run_ok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"id": "run_ok", "status": "succeeded", "scraperId": "scr_1"}),
        ))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path("/runs/run_ok/logs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"logs": []})))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path("/runs/run_auth"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            serde_json::json!({"error": "invalid API key", "code": "CLOUD_AUTH_FAILED"}),
        ))
        .mount(&api)
        .await;
    let dir = toml_str(&sandbox.out().display().to_string());
    // `gate` runs until the test creates `release` (bounded at 30 s, so a
    // failed test leaves no hook behind), so a delivery is `running` at the
    // scrape; it writes `started` first so the test knows when.
    let tail = format!(
        "[opensteer]\nbase_url = {}\napi_key = \"osk_monitoring\"\n\
         [[hook]]\nname = \"etl\"\nkind = \"shell\"\nevents = [\"run.succeeded\", \"run.failed\"]\ncommand = [\"/bin/true\"]\n\
         {FAILING_HOOK}\
         [[hook]]\nname = \"gate\"\nkind = \"shell\"\nevents = [\"run.succeeded\"]\n\
         command = [\"/bin/sh\", \"-c\", \"touch \\\"$OUT/started\\\"; i=0; while [ ! -e \\\"$OUT/release\\\" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\"]\n\
         env = {{ OUT = {dir} }}\n",
        toml_str(&api.uri())
    );
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .tail(&tail)
        .spawn()
        .await;

    let ok = run_event("run.succeeded", "evt_ok", "run_ok");
    assert_eq!(app.post_signed(&ok).await.status(), 202, "accepted");
    assert_eq!(app.post_signed(&ok).await.status(), 200, "duplicate");
    assert_eq!(app.post_webhook(&ok, None).await.status(), 401, "missing");
    let wrong = steerhook::signature::sign("whsec_not_ours", app.now_secs(), &ok);
    assert_eq!(
        app.post_webhook(&ok, Some(&wrong)).await.status(),
        401,
        "mismatch"
    );
    assert_eq!(
        app.post_webhook(&ok, Some("t=1,v1=00")).await.status(),
        401,
        "too old"
    );
    // Sabotage, as tests/api/storage.rs does: the next insert fails like a full disk.
    app.db().execute_batch(
        "CREATE TRIGGER sabotage BEFORE INSERT ON events
             BEGIN SELECT RAISE(FAIL, 'disk full (sabotage)'); END;",
    );
    let refused = run_event("run.succeeded", "evt_503", "run_503");
    assert_eq!(
        app.post_signed(&refused).await.status(),
        503,
        "storage unavailable"
    );
    app.db().execute_batch("DROP TRIGGER sabotage");

    poll_until(
        DEADLINE,
        "etl delivered, failing failed, gate running",
        || {
            let db = app.db();
            let state = |hook: &str| -> Option<String> {
                db.query_opt("SELECT state FROM jobs WHERE hook = $1", &[&hook])
            };
            state("etl").as_deref() == Some("succeeded")
                && state("failing").as_deref() == Some("failed")
                && sandbox.out().join("started").exists()
        },
    )
    .await;
    // Last, because a refused key holds every fetch: this event's fetch
    // waits (auth_retry_secs on a clock that never moves) and its delivery
    // stays blocked behind it.
    let auth = run_event("run.failed", "evt_auth", "run_auth");
    assert_eq!(app.post_signed(&auth).await.status(), 202);

    let wanted = [
        ("steerhook_opensteer_auth_faults_total", "", ""),
        (
            "steerhook_opensteer_api_calls_total",
            "code",
            "CLOUD_AUTH_FAILED",
        ),
        ("steerhook_queue_jobs", "state", "blocked"),
        ("steerhook_queue_jobs", "state", "pending"),
        ("steerhook_queue_jobs", "state", "running"),
    ];
    let text = wait_for_async(
        DEADLINE,
        "the auth fault and every queue state in /metrics",
        || async {
            let resp = app.get("/metrics").await;
            assert_eq!(resp.status(), 200, "GET /metrics");
            let text = resp.text().await.expect("the scrape");
            let scrape = Scrape::parse(&text);
            let auth_counted = text.lines().any(|l| {
                l.starts_with("steerhook_opensteer_auth_faults_total ") && !l.ends_with(" 0")
            });
            let complete = auth_counted
                && wanted
                    .iter()
                    .all(|(m, l, v)| l.is_empty() || scrape.has_value(m, l, v));
            complete.then_some(text)
        },
    )
    .await;
    std::fs::write(sandbox.out().join("release"), b"").expect("release the gate hook");
    app.stop().await;
    Scrape::parse(&text)
}

#[test]
fn every_metric_label_and_value_the_alert_rules_use_is_in_a_real_scrape() {
    let rules = rule_exprs(&read_repo(RULES));
    let alerts = read_repo(RULES).matches("- alert:").count();
    assert!(
        alerts >= 5 && rules.len() == alerts,
        "read {} exprs for {alerts} alerts in {RULES}: {rules:?}",
        rules.len()
    );
    let scrape = scrape();
    let problems: Vec<String> = rules
        .iter()
        .flat_map(|(alert, expr)| check_expr(scrape, &format!("alert {alert}"), expr, &[]))
        .collect();
    assert!(
        problems.is_empty(),
        "{RULES} uses what the daemon does not export:\n{}\nscrape: {:#?}",
        problems.join("\n"),
        scrape.series.keys()
    );
}

#[test]
fn every_metric_and_label_the_grafana_dashboard_uses_is_in_a_real_scrape() {
    let dashboard: Value = serde_json::from_str(&read_repo(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let queries = dashboard_queries(&dashboard);
    assert!(
        queries.len() >= 8,
        "{DASHBOARD}: only {} queries found",
        queries.len()
    );
    let scrape = scrape();
    let problems: Vec<String> = queries
        .iter()
        .flat_map(|(what, expr, labels)| {
            assert!(!expr.trim().is_empty(), "{what} has an empty query");
            check_expr(scrape, what, expr, labels)
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{DASHBOARD} uses what the daemon does not export:\n{}",
        problems.join("\n")
    );
}

/// Each panel says what it answers (its description), and README.md names
/// every panel, as the issue asked: a description instead of a screenshot.
#[test]
fn every_dashboard_panel_has_a_description_and_is_named_in_the_readme() {
    let dashboard: Value = serde_json::from_str(&read_repo(DASHBOARD)).expect("JSON");
    let readme = read_repo("README.md");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            panel["description"].as_str().is_some_and(|d| d.len() > 20),
            "panel {title:?} needs a description of what it answers"
        );
        assert!(
            readme.contains(&format!("**{title}**")),
            "README.md should describe the panel **{title}**"
        );
    }
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_unit_tests() {
    let test = "promtool_accepts_the_alert_rules_and_their_unit_tests";
    let Some(promtool) = require_tool(test, "promtool", "apt-get install prometheus") else {
        return;
    };
    for args in [["check", "rules", RULES], ["test", "rules", RULES_TEST]] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_promql_scanner_finds_metrics_labels_and_values() {
    let uses = promql_uses(
        r#"histogram_quantile(0.9, sum by (hook, le) (rate(steerhook_hook_duration_seconds_bucket{job="$job", outcome=~"ok|failed"}[$__rate_interval])))
           unless absent(up{job="steerhook"}) offset 5m"#,
    );
    assert_eq!(
        uses.metrics.iter().map(String::as_str).collect::<Vec<_>>(),
        ["steerhook_hook_duration_seconds_bucket", "up"]
    );
    assert_eq!(
        uses.grouping.iter().map(String::as_str).collect::<Vec<_>>(),
        ["hook", "le"]
    );
    assert_eq!(
        uses.selectors[0].matchers,
        [
            ("job".to_owned(), "=".to_owned(), "$job".to_owned()),
            (
                "outcome".to_owned(),
                "=~".to_owned(),
                "ok|failed".to_owned()
            )
        ]
    );
    let scrape = Scrape::parse(
        "# TYPE x counter\nsteerhook_hook_duration_seconds_bucket{hook=\"etl\",le=\"0.01\"} 1\n# EOF\n",
    );
    assert!(scrape.has_value("steerhook_hook_duration_seconds_bucket", "le", "0.01"));
    let problems = check_expr(
        &scrape,
        "t",
        "sum by (hook) (steerhook_hook_duration_seconds_bucket{outcome=\"ok\"})",
        &[],
    );
    assert_eq!(
        problems,
        ["t: steerhook_hook_duration_seconds_bucket has no label outcome"],
        "a label the series lack is reported"
    );
}
