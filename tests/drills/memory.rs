//! Memory while delivering a large log, short version: the real binary
//! fetches 16 MiB of logs in four pages of 4 MiB and hands them to a shell
//! hook that reads all of stdin. Its peak resident memory (VmHWM) must grow
//! by about a page, not by a multiple of the whole log.
//! `scripts/memory-drill.sh` does the same with 100 MB against a release build.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::prelude::*;

const PAGES: usize = 4;
const ENTRIES_PER_PAGE: usize = 4096;
/// Each entry is about 1 KiB of JSON, so a page is about 4 MiB.
const MESSAGE_BYTES: usize = 960;
/// The most the daemon's peak may grow: a few pages' worth. Holding the
/// whole log once (16 MiB) as parsed values, documents or copies, as the
/// daemon once did, passes this many times over.
const MAX_PEAK_GROWTH_KIB: u64 = 28 * 1024;

fn page(n: usize) -> serde_json::Value {
    let first = (PAGES - 1 - n) * ENTRIES_PER_PAGE;
    let entries: Vec<_> = (first..first + ENTRIES_PER_PAGE)
        .map(|i| json!({"seq": i, "level": "info", "message": "m".repeat(MESSAGE_BYTES)}))
        .collect();
    let mut body = json!({ "logs": entries });
    if n + 1 < PAGES {
        body["nextCursor"] = json!(format!("page-{}", n + 1));
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivering_16_mib_of_logs_grows_the_daemons_peak_memory_by_about_a_page() {
    let api = MockServer::start().await;
    let pages: Vec<String> = (0..PAGES).map(|n| page(n).to_string()).collect();
    Mock::given(method("GET"))
        .and(path_regex(r"^/runs/[^/]+/logs$"))
        .respond_with(move |r: &Request| {
            let n = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "beforeLogCursor")
                .map_or(0, |(_, v)| v.trim_start_matches("page-").parse().unwrap());
            ResponseTemplate::new(200).set_body_raw(pages[n].clone(), "application/json")
        })
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/runs/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "succeeded"})))
        .mount(&api)
        .await;

    let sandbox = Sandbox::new();
    let addr = free_addr();
    let bytes_file = sandbox.path("stdin-bytes");
    let hook = sandbox.shell_hook_with(
        "etl",
        &["run.succeeded"],
        &["/bin/sh", "-c", "wc -c > \"$BYTES\""],
        &[("BYTES", &bytes_file.display().to_string())],
        "",
    );
    let config = Config::default()
        .listen(addr)
        .lines("log", "level = \"warn\"")
        .opensteer(&api.uri())
        .set("opensteer", "log_page_size", ENTRIES_PER_PAGE.to_string())
        .hook(&hook);
    let config = sandbox.write_config(&config);
    let daemon = Daemon::spawn(serve_command(&config));
    wait_healthy(addr, Duration::from_secs(15)).await;
    let pid = daemon.pid().to_string();
    let peak_before = vm_kib(&pid, "VmHWM:");

    Webhook::to(&format!("http://{addr}{WEBHOOK_PATH}"))
        .post_accepted(run_event("run.succeeded", "evt_run_big", "run_big"))
        .await;
    let db = sandbox.db();
    wait_for(Duration::from_secs(60), "the delivery to finish", || {
        (db.count("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 2).then_some(())
    })
    .await;
    let peak_after = vm_kib(&pid, "VmHWM:");
    let rss_after = vm_kib(&pid, "VmRSS:");
    daemon.sigterm();
    let mut daemon = daemon;
    assert!(daemon.0.wait().unwrap().success(), "exit 0 on SIGTERM");

    let delivered: u64 = std::fs::read_to_string(&bytes_file)
        .expect("the hook ran")
        .trim()
        .parse()
        .unwrap();
    let logs_bytes = (PAGES * ENTRIES_PER_PAGE * MESSAGE_BYTES) as u64;
    assert!(
        delivered > logs_bytes,
        "the hook read the whole document: {delivered} bytes"
    );
    let growth = peak_after.saturating_sub(peak_before);
    eprintln!(
        "peak before {peak_before} KiB, after {peak_after} KiB (+{growth} KiB); RSS after {rss_after} KiB"
    );
    assert!(
        growth <= MAX_PEAK_GROWTH_KIB,
        "the peak grew by {growth} KiB for {} KiB of logs (at most {MAX_PEAK_GROWTH_KIB})",
        logs_bytes / 1024
    );
}
