//! Load generator for steerhook: sends signed, unique run events.
//!
//! Closed loop (`--connections N`: N workers, each sends its next request when
//! the previous is answered) or open loop (`--rate R`: requests start on a
//! fixed schedule whatever the answers do, and latency is measured from the
//! scheduled start, so a stall shows up in the percentiles instead of hiding).
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8787/webhooks/opensteer \
//!     --secret whsec_example_change_me --connections 16 --duration 10s
//! ```
//!
//! `--github-style` signs the way GitHub (and adnanh/webhook's
//! `payload-hmac-sha256` rule) expect, `X-Hub-Signature-256: sha256=<hex
//! HMAC of the body>`, to measure another receiver with the same load; such
//! a signature has no timestamp, so it does not bind the request to a time.
//!
//! The report includes this process's own CPU time (`loadgen_cpu_pct`, 100 =
//! one core busy), so a benchmark can tell when the generator, not the
//! server, is the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rand::Rng;

#[derive(Debug, Parser)]
#[command(about = "Sends signed Opensteer run webhooks and reports throughput and latency")]
struct Args {
    /// Webhook URL.
    #[arg(long)]
    url: String,
    /// Webhook secret.
    #[arg(long)]
    secret: String,
    /// Closed loop with this many connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Open loop at this many requests per second (overrides the closed loop).
    #[arg(long)]
    rate: Option<u64>,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Stop after this many requests.
    #[arg(long)]
    count: Option<u64>,
    /// Body size in bytes (padded JSON).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Fraction of requests that resend an earlier run (expect 200 duplicate).
    #[arg(long, default_value_t = 0.0)]
    dup_ratio: f64,
    /// Event and run ids in random order (`evt_<16 hex digits>`), as real
    /// ids are, instead of increasing ones: each event then lands on its
    /// own page of the id indexes.
    #[arg(long)]
    random_ids: bool,
    /// Fraction of requests with a wrong signature (expect 401).
    #[arg(long, default_value_t = 0.0)]
    bad_sig_ratio: f64,
    /// Write every event id that got a 2xx, one per line.
    #[arg(long)]
    ids_out: Option<PathBuf>,
    /// Largest number of requests in flight in open-loop mode.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Print one JSON line instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Sign as `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`
    /// (GitHub's scheme) instead of `x-opensteer-signature`.
    #[arg(long)]
    github_style: bool,
}

/// The fields of steerhook's answers the report looks at; one parse per answer.
#[derive(serde::Deserialize)]
struct Answer {
    status: Option<String>,
    code: Option<String>,
    id: Option<String>,
}

#[derive(Default)]
struct Results {
    latencies_us: Vec<u64>,
    by_status: BTreeMap<String, u64>,
    accepted_ids: Vec<String>,
}

struct Shared {
    args: Args,
    client: reqwest::Client,
    seq: AtomicU64,
    prefix: String,
    /// Mixed into `--random-ids` ids, so that two runs do not share ids.
    seed: u64,
    results: Mutex<Results>,
}

impl Shared {
    fn body(&self, n: u64) -> (String, Vec<u8>) {
        let mut rng = rand::thread_rng();
        let run_n =
            if self.args.dup_ratio > 0.0 && n > 0 && rng.gen_bool(self.args.dup_ratio.min(1.0)) {
                rng.gen_range(0..n)
            } else {
                n
            };
        let (id, run_id) = if self.args.random_ids {
            (
                format!("evt_{:016x}", scramble(self.seed ^ n)),
                format!("run_{:016x}", scramble(self.seed ^ run_n)),
            )
        } else {
            (
                format!("evt_{}_{n}", self.prefix),
                format!("run_{}_{run_n}", self.prefix),
            )
        };
        let body = format!(
            r#"{{"id":"{id}","type":"run.succeeded","data":{{"run":{{"id":"{run_id}","status":"succeeded","scraperId":"scr_loadgen"}}}},"padding":""#
        );
        let target = self.args.body_bytes.saturating_sub(2).max(body.len());
        let mut body = body.into_bytes();
        body.reserve(target + 2 - body.len());
        body.resize(target, b'x');
        body.extend_from_slice(b"\"}");
        (id, body)
    }

    async fn send_one(&self, scheduled: Instant) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let (id, body) = self.body(n);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let bad = self.args.bad_sig_ratio > 0.0
            && rand::thread_rng().gen_bool(self.args.bad_sig_ratio.min(1.0));
        let secret = if bad {
            "whsec_wrong"
        } else {
            self.args.secret.as_str()
        };
        let request = self.client.post(&self.args.url);
        let request = if self.args.github_style {
            request.header("x-hub-signature-256", github_signature(secret, &body))
        } else {
            request.header(
                "x-opensteer-signature",
                steerhook::signature::sign(secret, now, &body),
            )
        };
        let resp = request
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let (status, ok_id) = match resp {
            Ok(r) => {
                let s = r.status();
                let bytes = r.bytes().await.unwrap_or_default();
                let answer = serde_json::from_slice::<Answer>(&bytes).ok();
                let (label, id_back) = match answer {
                    Some(a) => (a.status.or(a.code), a.id),
                    None => (None, None),
                };
                let key = match label {
                    Some(c) => format!("{} {c}", s.as_u16()),
                    None => s.as_u16().to_string(),
                };
                (key, s.is_success().then(|| id_back.unwrap_or(id)))
            }
            Err(e) => (
                if e.is_timeout() {
                    "timeout".into()
                } else {
                    "connection error".into()
                },
                None,
            ),
        };
        let latency = scheduled.elapsed().as_micros() as u64;
        let mut r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        r.latencies_us.push(latency);
        *r.by_status.entry(status).or_default() += 1;
        if let Some(id) = ok_id {
            if self.args.ids_out.is_some() {
                r.accepted_ids.push(id);
            }
        }
    }
}

/// SplitMix64's finaliser: a bijection on u64, so distinct counters give
/// distinct ids, in an order unrelated to the counter's.
fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `sha256=` + hex HMAC-SHA256 of the raw body: GitHub's `X-Hub-Signature-256`.
fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat
/// (Linux; `None` elsewhere). Ticks are taken as 100 per second (USER_HZ).
fn own_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = args.rate.map_or(args.connections, |_| args.max_in_flight);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?;
    let shared = Arc::new(Shared {
        prefix: format!("{}_{}", std::process::id(), rand::thread_rng().gen::<u32>()),
        seed: rand::thread_rng().gen(),
        args,
        client,
        seq: AtomicU64::new(0),
        results: Mutex::new(Results::default()),
    });
    let duration: Duration = shared.args.duration.into();
    let count = shared.args.count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let deadline = started + duration;
    let issued = Arc::new(AtomicU64::new(0));
    match shared.args.rate {
        None => {
            let mut tasks = Vec::new();
            for _ in 0..shared.args.connections {
                let s = shared.clone();
                let issued = issued.clone();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < deadline
                        && issued.fetch_add(1, Ordering::Relaxed) < count
                    {
                        s.send_one(Instant::now()).await;
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let sem = Arc::new(tokio::sync::Semaphore::new(shared.args.max_in_flight));
            let mut tasks = tokio::task::JoinSet::new();
            let mut next = started;
            let mut n = 0u64;
            while next < deadline && n < count {
                tokio::time::sleep_until(next.into()).await;
                let permit = sem.clone().acquire_owned().await?;
                let s = shared.clone();
                let scheduled = next;
                tasks.spawn(async move {
                    s.send_one(scheduled).await;
                    drop(permit);
                });
                n += 1;
                next += interval;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let elapsed = started.elapsed();
    let cpu_pct = own_cpu_secs().map(|c| 100.0 * c / elapsed.as_secs_f64());
    let mut r = shared.results.lock().unwrap_or_else(|p| p.into_inner());
    r.latencies_us.sort_unstable();
    let total = r.latencies_us.len() as u64;
    let ok: u64 = r
        .by_status
        .iter()
        .filter(|(k, _)| k.starts_with('2'))
        .map(|(_, v)| *v)
        .sum();
    let accepted = r.by_status.get("202 accepted").copied().unwrap_or(0);
    if let Some(path) = &shared.args.ids_out {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for id in &r.accepted_ids {
            writeln!(f, "{id}")?;
        }
    }
    let secs = elapsed.as_secs_f64();
    let (p50, p90, p99, max) = (
        pct(&r.latencies_us, 0.50),
        pct(&r.latencies_us, 0.90),
        pct(&r.latencies_us, 0.99),
        r.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    if shared.args.json {
        println!(
            "{}",
            serde_json::json!({
                "requests": total, "seconds": secs, "rps": total as f64 / secs,
                "accepted_per_sec": accepted as f64 / secs, "ok": ok,
                "ok_per_sec": ok as f64 / secs, "loadgen_cpu_pct": cpu_pct,
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                "by_status": r.by_status,
            })
        );
    } else {
        println!(
            "requests   {total} in {secs:.2} s = {:.0} req/s ({:.0} accepted/s)",
            total as f64 / secs,
            accepted as f64 / secs
        );
        println!("latency    p50 {p50:.2} ms  p90 {p90:.2} ms  p99 {p99:.2} ms  max {max:.2} ms");
        if let Some(c) = cpu_pct {
            println!("loadgen    {c:.0}% of one core");
        }
        for (k, v) in &r.by_status {
            println!("  {k:<28} {v}");
        }
    }
    Ok(())
}
