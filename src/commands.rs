//! What each subcommand does. Errors carry context; `main` maps them to exit codes.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, EventsCommand, HooksCommand, QuarantineCommand};
use crate::config::{ConfigError, Settings};
use crate::secret::Secret;
use crate::signature::{sign, Verifier};
use crate::startup::{process_env, Application};

/// Exit code for a configuration error (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// The exit code for an error: 78 for configuration errors, else 1.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<ConfigError>()) {
        EXIT_CONFIG
    } else {
        1
    }
}

pub(crate) fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(Settings::load(&cli.config, &process_env())?)
}

/// For commands that use no secret: `_file` secrets are not read.
fn load_settings_for_inspection(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(Settings::load_without_secret_files(
        &cli.config,
        &process_env(),
    )?)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")
}

fn read_input(file: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            Ok(buf)
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve => {
            let settings = load_settings(&cli)?;
            crate::telemetry::init_daemon(settings.log.format, &settings.log.level);
            runtime()?.block_on(async {
                let shutdown = CancellationToken::new();
                crate::shutdown::cancel_on_signals(shutdown.clone())
                    .context("cannot install signal handlers")?;
                let app = Application::build(settings).await?;
                app.run_until_stopped(shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            let path = &cli.config;
            let settings = load_settings(&cli)?;
            println!("{} is valid\n", path.display());
            print!("{}", settings.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign {
            secret,
            timestamp,
            file,
        } => {
            let body = read_input(file.as_ref())?;
            println!(
                "{}",
                sign(secret, timestamp.unwrap_or_else(unix_now), &body)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            secret,
            header,
            at,
            tolerance,
            file,
        } => {
            let body = read_input(file.as_ref())?;
            let now = UNIX_EPOCH + std::time::Duration::from_secs(at.unwrap_or_else(unix_now));
            let verifier = Verifier::new(vec![Secret::new(secret.clone())], *tolerance);
            match verifier.verify(Some(header.as_bytes()), body, now) {
                Ok(_) => {
                    println!("ok");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("{}", e.code());
                    eprintln!("{}", offline_explanation(&e, at.is_some()));
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::SendTest {
            url,
            secret,
            event,
            run_id,
        } => crate::send_test::run(
            &cli,
            url.clone(),
            secret.clone(),
            (*event).into(),
            run_id.clone(),
        ),
        Command::Events(cmd) => {
            let settings = load_settings_for_inspection(&cli)?;
            runtime()?.block_on(async {
                let store = crate::startup::open_existing_store(&settings).await?;
                match cmd {
                    EventsCommand::List {
                        status,
                        event_type,
                        since,
                        limit,
                        json,
                    } => {
                        let filter = crate::store::EventFilter {
                            status: status.map(Into::into),
                            event_type: event_type.map(Into::into),
                            since: since.map(|d| {
                                crate::clock::to_unix_ms(SystemTime::now())
                                    - std::time::Duration::from(d).as_millis() as i64
                            }),
                            limit: (*limit).clamp(1, 10_000),
                        };
                        crate::ops::events_list(&store, filter, *json).await
                    }
                    EventsCommand::Show { id, json } => {
                        crate::ops::events_show(&store, id.clone(), *json).await
                    }
                }
            })
        }
        Command::Replay {
            id,
            status,
            hook,
            since,
            dry_run,
        } => {
            let settings = load_settings_for_inspection(&cli)?;
            runtime()?.block_on(async {
                let store = crate::startup::open_existing_store(&settings).await?;
                match (id, status) {
                    (Some(id), _) => {
                        crate::ops::replay(&store, &settings, id.clone(), hook.clone()).await
                    }
                    // clap requires one of the two; --status has one value.
                    (None, _) => {
                        crate::ops::replay_failed(
                            &store,
                            &settings,
                            hook.clone(),
                            since.map(Into::into),
                            *dry_run,
                        )
                        .await
                    }
                }
            })
        }
        Command::Hooks(cmd) => {
            let settings = load_settings_for_inspection(&cli)?;
            runtime()?.block_on(async {
                let store = crate::startup::open_existing_store(&settings).await?;
                match cmd {
                    HooksCommand::List { json } => {
                        crate::ops::hooks_list(&store, &settings, *json).await
                    }
                    HooksCommand::Pause { name } => {
                        crate::ops::hooks_set_paused(&store, &settings, name.clone(), true).await
                    }
                    HooksCommand::Resume { name } => {
                        crate::ops::hooks_set_paused(&store, &settings, name.clone(), false).await
                    }
                }
            })
        }
        Command::Quarantine(cmd) => {
            let settings = load_settings_for_inspection(&cli)?;
            runtime()?.block_on(async {
                let store = crate::startup::open_existing_store(&settings).await?;
                match cmd {
                    QuarantineCommand::List { limit, json } => {
                        crate::ops::quarantine_list(&store, *limit, *json).await
                    }
                    QuarantineCommand::Show { id, json } => {
                        crate::ops::quarantine_show(&store, *id, *json).await
                    }
                }
            })
        }
        Command::Prune {
            older_than,
            dry_run,
        } => {
            let settings = load_settings_for_inspection(&cli)?;
            let age = older_than.map_or(settings.storage.retention, Into::into);
            runtime()?.block_on(async {
                let store = crate::startup::open_existing_store(&settings).await?;
                crate::ops::prune(&store, age, *dry_run).await
            })
        }
        Command::Doctor => {
            let settings = match load_settings(&cli) {
                Ok(s) => s,
                Err(e) => return Ok(crate::ops::doctor_config_failed(&e)),
            };
            runtime()?.block_on(crate::ops::doctor(&settings))
        }
        Command::Completions { shell } => crate::completions::print_completions(*shell),
        Command::Man { out } => crate::completions::man(out.as_deref()),
    }
}

/// `verify` runs offline: its messages speak of the command line, not of a
/// server's clock or configuration.
fn offline_explanation(e: &crate::signature::SignatureError, at_given: bool) -> String {
    use crate::signature::SignatureError;
    match e {
        SignatureError::OutOfTolerance {
            skew_secs,
            tolerance_secs,
        } => {
            let reference = if at_given {
                "the time given with --at"
            } else {
                "this machine's clock (give the time the request arrived with --at)"
            };
            format!(
                "the signature timestamp is {} s {} {reference}, more than --tolerance {tolerance_secs} s",
                skew_secs.unsigned_abs(),
                if *skew_secs < 0 { "before" } else { "after" },
            )
        }
        SignatureError::Mismatch => {
            "no v1 signature matches the --secret given; check the secret, and that the file holds the body exactly as received (no added newline)".to_owned()
        }
        other => other.to_string(),
    }
}
