//! One test body, run on each storage backend.
//!
//! ```ignore
//! backends! {
//!     #[tokio::test]
//!     async fn a_duplicate_delivery_is_stored_once(backend) {
//!         let app = TestApp::builder().backend(backend).spawn().await;
//!         ...
//!     }
//! }
//! ```
//!
//! makes a module `a_duplicate_delivery_is_stored_once` with two tests,
//! `sqlite` and `postgres`, whose `backend` is [`Backend::Sqlite`] and
//! [`Backend::Postgres`]. The body sees the parent module's items; it makes
//! its database with `TestApp::builder().backend(backend)`,
//! `Sandbox::with_backend(backend)` or `TestDb::fresh(backend)`. The
//! PostgreSQL variant skips, printing why, when no server answers and
//! `STEERHOOK_TEST_SKIP_POSTGRES=1` outside CI;
//! with no server and no such variable it fails, saying how to get one.
//!
//! A test that runs its own runtimes is a plain `#[test] fn name(backend)`
//! inside `backends!`, the same way.

use super::db::{no_server_message, postgres_server, Backend, SKIP_POSTGRES_VAR};
use super::tools::in_ci;

/// Whether the variant of `test` on `backend` runs; prints why not when not.
pub fn runs(backend: Backend, test: &str) -> bool {
    match backend {
        Backend::Sqlite => true,
        Backend::Postgres => postgres_runs(test),
    }
}

/// Whether a PostgreSQL test can run: true when the server answers; false,
/// printing why, when it does not and `STEERHOOK_TEST_SKIP_POSTGRES=1`
/// outside CI; else it fails, saying how to get a server. Under CI
/// (`STEERHOOK_CI=1`) it never skips, as with the outside tools.
pub fn postgres_runs(test: &str) -> bool {
    match postgres_server() {
        Ok(()) => true,
        Err(why) if std::env::var(SKIP_POSTGRES_VAR).as_deref() == Ok("1") && !in_ci() => {
            eprintln!("SKIP {test}: no PostgreSQL server ({why}); {SKIP_POSTGRES_VAR}=1");
            false
        }
        Err(why) => panic!("{}", no_server_message(why)),
    }
}

/// See the module documentation.
#[macro_export]
macro_rules! backends {
    () => {};
    ($(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block $($rest:tt)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            async fn sqlite() {
                let $backend = $crate::support::db::Backend::Sqlite;
                $body
            }

            $(#[$meta])*
            async fn postgres() {
                let $backend = $crate::support::db::Backend::Postgres;
                if !$crate::support::backends::runs($backend, module_path!()) {
                    return;
                }
                $body
            }
        }
        $crate::backends! { $($rest)* }
    };
    ($(#[$meta:meta])* fn $name:ident($backend:ident) $body:block $($rest:tt)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            fn sqlite() {
                let $backend = $crate::support::db::Backend::Sqlite;
                $body
            }

            $(#[$meta])*
            fn postgres() {
                let $backend = $crate::support::db::Backend::Postgres;
                if !$crate::support::backends::runs($backend, module_path!()) {
                    return;
                }
                $body
            }
        }
        $crate::backends! { $($rest)* }
    };
}
