//! ISSUE 4, fan-out, through the whole app: a signed webhook over HTTP, the
//! event in a real SQLite file, the worker delivering it to real hook
//! processes, a real SMTP server and real HTTP receivers.
//!
//! Most tests drive the worker one step at a time
//! (`Dispatcher::try_dispatch_next`) with a `ManualClock`; the ones about
//! concurrency and restarts run the real loop of `serve` and poll files and
//! the database with a deadline. No test sleeps to synchronise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

#[path = "../support/mod.rs"]
mod support;

mod email;
mod helpers;
mod http;
mod restart;
mod shell;
