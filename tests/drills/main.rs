//! The short, deterministic versions of the failure drills of
//! docs/DRILLS.md, which hold steerhook to SPEC §7 when things break. The long ones, which need root, a tmpfs or minutes,
//! are `scripts/*-drill.sh`; `scripts/chaos-drill.sh` runs the ignored
//! `long_` test of this binary.
//!
//! Everything is real: the app built through the startup seam (or the real
//! binary, for kill -9), a database in a temp dir, hooks as child
//! processes, the Opensteer API faked on a socket (wiremock), a real SMTP
//! server on a socket. Waits are polls with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

#[path = "../support/mod.rs"]
mod support;

mod chaos;
mod crash;
mod disk_full;
mod memory;
mod slow_clients;
