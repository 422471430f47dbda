//! steerhook: receives Opensteer Cloud run webhooks, verifies and stores each
//! one once, enriches it from the Opensteer API and fans it out to hooks.
//!
//! # Layout
//!
//! - `src/main.rs`: parses the command line, runs the command, maps errors to exit codes.
//! - [`cli`]: the command line of SPEC §2 (clap derive).
//! - [`commands`]: what each subcommand does, on top of the modules below.
//! - [`config`]: the typed settings: file, `STEERHOOK__` variables, `_file` secrets, every rule.
//! - [`startup`]: the one seam `main` and the tests build and run the daemon through.
//! - [`shutdown`]: SIGTERM/SIGINT into one cancellation token.
//! - [`telemetry`]: the tracing subscriber (text or JSON).
//! - [`http`]: the webhook endpoint, `/healthz`, `/metrics`, errors as `{"error","code"}`.
//! - [`signature`]: the `x-opensteer-signature` verifier, pure.
//! - [`domain`]: the event read from a verified body (SPEC §5) and the hook document (SPEC §6).
//! - [`store`]: the storage interface, named after what it does; SQL lives only here.
//! - [`opensteer`]: the API client and the tolerant readers of its answers.
//! - [`dispatch`]: the worker: claim, fetch job, delivery job, retry policy.
//! - [`hooks`]: the `Sink` interface and the hook kinds (shell, e-mail, HTTP).
//! - [`metrics`]: the Prometheus registry and its text rendering.
//! - [`ops`]: the operator's commands (`events`, `replay`, `hooks`, `quarantine`, `prune`, `doctor`).
//! - [`send_test`]: `steerhook send-test`, a signed sample webhook.
//! - [`instance`]: the database's resolved path, its instance lock and payload directory.
//! - [`terminal`]: escaping for text printed to a terminal.
//! - [`clock`]: time as an input; [`secret`]: a string that never prints.
//!
//! Dependencies point one way: `http -> signature, domain, store`;
//! `dispatch -> store, opensteer, hooks`; `signature` depends on nothing in
//! the crate and `domain` only on it (only a verified body becomes an
//! event); only `startup` and `commands` know every module.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod completions;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod hooks;
pub mod http;
pub mod instance;
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
pub mod terminal;
