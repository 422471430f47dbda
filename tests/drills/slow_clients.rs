//! Slow clients, short version: connections that trickle a request head or
//! a body do not hold up signed traffic, and are cut after
//! `server.header_timeout_ms` (actix's client request timeout: 408) and
//! `server.body_timeout_ms` (our read loop: 408 REQUEST_TIMEOUT).
//! `scripts/slow-clients-drill.sh` does it with 200 connections, and sends
//! 10 MiB chunked bodies (tests/api/webhook.rs has the chunked 413).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::prelude::*;

const HEADER_MS: u64 = 500;
const BODY_MS: u64 = 800;
const TRICKLERS: usize = 8;
const STEP: Duration = Duration::from_millis(100);

/// What a trickling connection saw: the first line the server sent (or
/// "closed"), and when, counted from the connect.
async fn trickle(addr: std::net::SocketAddr, head_complete: bool) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let slow: Vec<u8> = if head_complete {
        let head = format!(
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             x-opensteer-signature: t=1,v1=00\r\nContent-Length: 1000\r\n\r\n"
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("write the head");
        vec![b' '; 1000]
    } else {
        format!(
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
            "a".repeat(200)
        )
        .into_bytes()
    };
    let mut buf = [0u8; 4096];
    // Bounded: 200 steps of 100 ms, far past both timeouts.
    for byte in slow.iter().take(200) {
        // The server may have closed already: a failed write ends the loop via the read.
        let _ = stream.write_all(std::slice::from_ref(byte)).await;
        match tokio::time::timeout(STEP, stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return ("closed".into(), started.elapsed()),
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                return (text, started.elapsed());
            }
        }
    }
    ("still open".into(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_clients_are_cut_at_their_timeouts_while_signed_requests_are_answered() {
    let sandbox = Sandbox::new();
    let server =
        format!("header_timeout_ms = {HEADER_MS}\nbody_timeout_ms = {BODY_MS}\nworkers = 1");
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .system_clock()
        .server(&server)
        .spawn()
        .await;
    let webhook = app.webhook();
    let heads: Vec<_> = (0..TRICKLERS)
        .map(|_| tokio::spawn(trickle(app.addr, false)))
        .collect();
    let bodies: Vec<_> = (0..TRICKLERS)
        .map(|_| tokio::spawn(trickle(app.addr, true)))
        .collect();

    // One worker thread, 16 trickling connections: signed requests still pass.
    for i in 0..20 {
        let started = Instant::now();
        let answer = webhook
            .try_post_signed(run_event(
                "run.succeeded",
                &format!("evt_slow_{i}"),
                &format!("slow_{i}"),
            ))
            .await
            .expect("answered");
        assert_eq!(answer.status, 202, "{}", answer.text);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "signed request {i} took {:?}",
            started.elapsed()
        );
    }

    let slack = Duration::from_millis(1500);
    for h in heads {
        let (seen, after) = h.await.unwrap();
        assert!(
            seen.starts_with("HTTP/1.1 408") || seen == "closed",
            "a trickled head must get 408 or a close: {seen:?}"
        );
        assert!(
            after >= Duration::from_millis(HEADER_MS) - STEP
                && after <= Duration::from_millis(HEADER_MS) + slack,
            "a trickled head was cut after {after:?}, header_timeout_ms = {HEADER_MS}"
        );
    }
    for h in bodies {
        let (seen, after) = h.await.unwrap();
        assert!(
            seen.starts_with("HTTP/1.1 408") && seen.contains("REQUEST_TIMEOUT"),
            "a trickled body must get 408 REQUEST_TIMEOUT: {seen:?}"
        );
        assert!(
            after >= Duration::from_millis(BODY_MS)
                && after <= Duration::from_millis(BODY_MS) + slack,
            "a trickled body was cut after {after:?}, body_timeout_ms = {BODY_MS}"
        );
    }
    let db = sandbox.db();
    assert_eq!(
        db.count("SELECT count(*) FROM events"),
        20,
        "only the signed events"
    );
    assert_eq!(db.count("SELECT count(*) FROM quarantine"), 0);
    app.stop().await;
}
