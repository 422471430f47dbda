//! steerhook: receives Opensteer Cloud run webhooks, verifies and stores each
//! one once, enriches it from the Opensteer API and fans it out to hooks.
//!
//! # Layout
//!
//! A module a line; the files of a module with a folder are indented below it.
//!
//! - `src/main.rs`: parses the command line, runs the command, maps errors to exit codes.
//! - [`cli`]: the command line of SPEC §2 (clap derive).
//! - [`commands`]: what each subcommand does, on top of the modules below.
//! - [`completions`]: shell completion scripts and man pages, made from [`cli`].
//! - [`config`]: the typed settings: file, `STEERHOOK__` variables, `_file` secrets, every rule.
//!   - `raw`: the file as written, with the default of every optional key.
//!   - `validate`: the rules, one function per section, each error naming its key.
//!   - `hooks`: the rules of the `[[hook]]` sections.
//!   - `summary`: what `check-config` prints, secrets never shown.
//! - [`startup`]: the one seam `main` and the tests build and run the daemon through.
//! - [`shutdown`]: SIGTERM/SIGINT into one cancellation token.
//! - [`telemetry`]: the tracing subscriber (text or JSON).
//! - [`http`]: the webhook endpoint, `/healthz`, `/metrics`, errors as `{"error","code"}`.
//!   - `webhook`: `POST {webhook_path}`, the checks of SPEC §4 in order.
//!   - `error`: the JSON error answers and their status codes.
//! - [`signature`]: the `x-opensteer-signature` verifier, pure.
//! - [`domain`]: the event read from a verified body (SPEC §5) and the hook document (SPEC §6).
//!   - `event`: the event type, ids and the payload's rules.
//!   - `hook_document`: the document a hook receives, and its enrichment.
//!   - `route`: a hook's `match`, which runs it is for.
//! - [`store`]: the storage interface, named after what it does; SQL lives only here.
//!   - `model`: what ingest and the worker give the store and get back.
//!   - `views`: what the CLI and `/metrics` ask and get back.
//!   - `logs`: log rows as one streamed JSON array, and the newest for a summary.
//!   - `sqlite`: one file, one daemon; opens the store, runs reads and writes.
//!     - `ingest`: an event stored, or found a duplicate, in the writer's batch.
//!     - `worker`: claims, leases, attempts recorded, recovery after a restart.
//!     - `expand`: an event's jobs, made by the worker after the answer.
//!     - `enrichment`: the event row a fetch works from, the run, its progress.
//!     - `logs`: the pages a fetch stores, streamed out, the newest.
//!     - `inspect`: the CLI's read views.
//!     - `operator`: replay, prune, hooks pause and resume.
//!     - `writer`: the single writer thread and its group commit.
//!     - `checkpointer`: WAL checkpoints off the commit path.
//!     - `schema`: the versioned migrations.
//!   - `postgres`: a database several daemons share; opens the store.
//!     - `ingest`: inserts batched into one statement, answered after the commit.
//!     - `worker`: `SKIP LOCKED` claims under leases, attempts recorded, hook rows.
//!     - `notify`: `NOTIFY` when work is queued, a `LISTEN` connection per daemon.
//!     - `enrichment`: the event row a fetch works from, the run, its progress.
//!     - `logs`: the pages a fetch stores, streamed out, the newest.
//!     - `inspect`: the CLI's read views.
//!     - `operator`: replay, prune, hooks pause and resume.
//!     - `schema`: the versioned migrations, under an advisory lock.
//! - [`opensteer`]: the API client and the tolerant readers of its answers.
//!   - `read`: the run, a logs page and `Retry-After`, read tolerantly (SPEC §5).
//!   - `timestamp`: a log entry's timestamp, whichever way it is written.
//!   - `error`: what a failure means for the caller, error bodies read bounded and redacted.
//!   - `probe`: the request `doctor` sends to prove the API and the key.
//! - [`dispatch`]: the worker: the loop, claim and heartbeat.
//!   - `fetch`: the fetch job, the run and its log pages.
//!   - `deliver`: the delivery job, the document handed to a hook.
//!   - [`dispatch::retry`]: the retry policy, pure functions.
//! - [`hooks`]: the `Sink` interface and the hook kinds.
//!   - [`hooks::shell`]: a program run with the document on stdin.
//!     - `process`: the child process of an attempt: spawn, feed, watch, stop.
//!     - `check`: `doctor`'s checks of the program and the script it runs.
//!   - [`hooks::email`]: one plain-text message through `[smtp]`.
//!     - `render`: the subject, body and Message-ID.
//!   - [`hooks::http`]: one signed POST per event.
//!     - `settings`: the hook's settings and the rules of their values.
//!     - `sign`: the Standard Webhooks signature.
//!     - `answer`: what the receiver answered and what it means.
//! - [`metrics`]: the Prometheus registry and its text rendering.
//! - [`ops`]: the operator's commands (SPEC §2), a file each.
//!   - `events`: `events list` and `events show`.
//!   - `replay`: `replay ID` and `replay --status failed`.
//!   - `hooks`: `hooks list`, `hooks pause`, `hooks resume`.
//!   - `quarantine`: `quarantine list` and `quarantine show`.
//!   - `prune`: `prune`, or what it would delete.
//!   - `doctor`: a line per check, `ok` only for what it proved.
//! - [`send_test`]: `steerhook send-test`, a signed sample webhook.
//! - [`instance`]: the database's resolved path, its instance lock and payload directory.
//! - [`terminal`]: escaping for text printed to a terminal.
//! - [`clock`]: time as an input.
//! - [`secret`]: a string that never prints.
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
