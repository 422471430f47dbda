//! steerhook: receives Opensteer Cloud run webhooks, stores them durably in
//! SQLite, enriches them from the Opensteer API and fans them out to hooks.
#![forbid(unsafe_code)]

pub mod clock;
pub mod hooks;
pub mod opensteer;
pub mod secret;
