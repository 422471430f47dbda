//! Black-box tests of the ingest half and the operator's side (SPEC §2, §3,
//! §4, §7): the real application (through `Application::build_with`, the
//! startup seam `serve` uses) on port 0, a real database in a temp dir, HTTP
//! through reqwest, and the real binary for the command line, configuration
//! errors and signals. `harness` tests the test harness's own database
//! helpers on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod cli;
mod config_cli;
mod doc_configs;
mod doctor;
mod harness;
mod logs;
mod monitoring;
mod operate;
mod operator_day;
mod readme_tour;
mod shutdown;
mod storage;
mod systemd_notify;
mod vectors;
mod webhook;

#[path = "../support/mod.rs"]
mod support;
