//! The storage interface's own tests, one body per test run against each
//! backend: a SQLite file in a temp dir, and a fresh database on a real
//! PostgreSQL server (SPEC §7). Several `Store`s opened on one PostgreSQL
//! database stand for several daemons. `answers` is SQLite's alone: the
//! routing of its group commit's answers to the threads that asked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod answers;
mod cluster;
mod conformance;
mod operator;

#[path = "../support/mod.rs"]
mod support;
