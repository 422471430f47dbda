//! A bare actix-web server: reads each POST body and answers 200 "ok", with
//! nothing behind it. It is the ceiling for HTTP on the machine at hand, the
//! reference `scripts/bench.sh` (part `bare`) measures so that figures from
//! different machines can be compared: issue 6 quotes about 124,000 req/s for
//! such a server on the machine its targets were set on.
//!
//! ```text
//! cargo run --release --example bare -- 127.0.0.1:8788
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed
#![forbid(unsafe_code)]

use actix_web::{web, App, HttpResponse, HttpServer};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8788".to_owned());
    // One worker, as steerhook runs by default when pinned to one CPU.
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new().default_service(web::to(|body: web::Bytes| async move {
                HttpResponse::Ok().body(if body.is_empty() { "empty" } else { "ok" })
            }))
        })
        .workers(1)
        .bind(addr)?
        .run()
        .await
    })
}
