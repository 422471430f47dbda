//! What the shell gets: completion scripts (`steerhook completions SHELL`)
//! and man pages (the hidden `steerhook man`, run by `scripts/package.sh`).
//! Both are generated from the clap definition in [`crate::cli`] at run
//! time, so they cannot drift from the command line the binary parses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The program name the completion scripts register themselves for.
const BIN_NAME: &str = "steerhook";

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    // clap_complete panics when its writer fails; a Vec never does, and the
    // write to stdout (which can fail: a closed pipe) happens afterwards.
    clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut script);
    script
}

/// `steerhook completions SHELL`: the script on stdout.
pub fn print_completions(shell: Shell) -> anyhow::Result<ExitCode> {
    write_stdout(&completion_script(shell)).context("cannot print the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// The top-level man page, `steerhook(1)`, in roff.
pub fn man_page() -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("cannot render the man page")?;
    Ok(page)
}

/// Writes `steerhook.1` and one page per visible subcommand
/// (`steerhook-events-list.1`, ...) into `dir`, creating it; returns the
/// files written.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn write_pages(
        cmd: clap::Command,
        dir: &Path,
        written: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write_pages(sub.clone(), dir, written)?;
        }
        written.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // As clap_mangen::generate_to does: no page for the implicit `help`
    // subcommand, and a built command so that subcommands carry their full
    // names (`steerhook events list`).
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(written)
}

/// `steerhook man [--out DIR]`: every page into DIR (their paths on
/// stdout), or `steerhook(1)` on stdout.
pub fn man(out: Option<&Path>) -> anyhow::Result<ExitCode> {
    match out {
        Some(dir) => {
            let listing: String = write_man_pages(dir)?
                .iter()
                .map(|p| format!("{}\n", p.display()))
                .collect();
            write_stdout(listing.as_bytes())
        }
        None => write_stdout(&man_page()?),
    }
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}
