//! steerhook: receives Opensteer Cloud run webhooks, stores them durably in
//! SQLite, enriches them from the Opensteer API and fans them out to hooks.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod commands;
pub mod completions;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod opensteer;
pub mod ops;
pub mod secret;
pub mod send_test;
pub mod shutdown;
pub mod signature;
pub mod startup;
pub mod store;
pub mod telemetry;
