//! Black-box tests of the durable queue and the enrichment fetch (ISSUE 3):
//! the real app on a real SQLite file, the Opensteer API faked on a real
//! socket (wiremock), real shell hooks. Step tests drive
//! `Dispatcher::try_dispatch_next` with a `ManualClock`; loop tests poll the
//! database with a deadline. Nothing sleeps to synchronise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod crash;
mod fetch;
mod helpers;
mod idle;
mod load;
mod panics;
mod retry;
mod routing;
mod secrets;
mod storage_fault;
#[path = "../support/mod.rs"]
mod support;
