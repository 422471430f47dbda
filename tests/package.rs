//! The Debian package, checked without root. `scripts/package.sh` packages
//! the binary this test run built (`STEERHOOK_BIN`, no release build, fast
//! compression) into a temp dir; `dpkg-deb -I`, `-c`, `-e` and `-x` then
//! show that the .deb installs exactly the files docs/DEPLOY.md lists, with
//! their modes, that the config is a conffile, and that the unit, sysusers,
//! tmpfiles, config and maintainer scripts inside are the repository's.
//! The completions and man pages the package ships, and the packaged
//! config's agreement with config.example.toml, are checked here too.
//! Installing it (user, directories, upgrade, purge) is the drill
//! `scripts/package-drill.sh` (docs/DRILLS.md), which needs root.
//!
//! A missing tool (cargo-deb, dpkg-deb, dpkg-shlibdeps, man) skips a test
//! with a printed reason, and fails it under CI (`STEERHOOK_CI=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use clap::CommandFactory;

mod support;

use support::daemon::{describe, read_repo, repo_path, steerhook_command};
use support::tools::{require_tool, skip_or_fail};

const UNIT: &str = "systemd/steerhook.service";
const PACKAGED_CONFIG: &str = "deploy/debian/steerhook.toml";
const EXAMPLE_CONFIG: &str = "config.example.toml";
const DEPLOY: &str = "docs/DEPLOY.md";
/// The heading in docs/DEPLOY.md above the table of what the .deb installs.
const FILE_TABLE_HEADING: &str = "### What the package installs";
const CREDENTIALS_DIR: &str = "/etc/steerhook/credentials";

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", describe(&out));
    out
}

/// One line of `dpkg-deb -c`.
#[derive(Debug)]
struct Entry {
    /// `-rw-r--r--`
    perms: String,
    /// `0/0`
    owner: String,
    /// `/usr/bin/steerhook`
    path: String,
}

impl Entry {
    fn is_file(&self) -> bool {
        self.perms.starts_with('-')
    }

    /// `-rwxr-xr-x` -> 0o755.
    fn mode(&self) -> u32 {
        self.perms
            .chars()
            .skip(1)
            .take(9)
            .fold(0, |m, c| (m << 1) | u32::from(c != '-'))
    }
}

/// A .deb built from this test run's binary, and what dpkg-deb says of it.
struct Deb {
    /// Holds the files below until the test binary ends.
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// `dpkg-deb -I`.
    info: String,
    /// `dpkg-deb -c`.
    entries: Vec<Entry>,
    /// `dpkg-deb -x`: the files as installed.
    root: PathBuf,
    /// `dpkg-deb -e`: control, conffiles, maintainer scripts.
    control: PathBuf,
}

impl Deb {
    fn file(&self, installed: &str) -> PathBuf {
        self.root.join(installed.trim_start_matches('/'))
    }

    fn read(&self, installed: &str) -> Vec<u8> {
        std::fs::read(self.file(installed))
            .unwrap_or_else(|e| panic!("{installed} is not in the .deb: {e}"))
    }
}

/// The .deb, built once for every test here; `None` (after saying why)
/// when a tool is missing.
fn deb(test: &str) -> Option<&'static Deb> {
    for (tool, install) in [
        ("dpkg-deb", "apt-get install dpkg"),
        ("dpkg-shlibdeps", "apt-get install dpkg-dev"),
    ] {
        require_tool(test, tool, install)?;
    }
    // A cargo subcommand: cargo finds it in its own bin directory, which
    // need not be on PATH, so ask cargo rather than look for the file.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_deb = Command::new(cargo).args(["deb", "--version"]).output();
    if !cargo_deb.is_ok_and(|out| out.status.success()) {
        skip_or_fail(
            test,
            "cargo-deb is not installed (cargo install cargo-deb --version 3.8.0 --locked)",
        );
        return None;
    }
    static DEB: OnceLock<Deb> = OnceLock::new();
    Some(DEB.get_or_init(build_deb))
}

fn build_deb() -> Deb {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_ok(
        Command::new("bash")
            .arg(repo_path("scripts/package.sh"))
            .args(["--fast", "--quiet", "--output"])
            .arg(dir.path().join("deb/"))
            .env("CARGO_TARGET_DIR", dir.path().join("target"))
            .env("STEERHOOK_BIN", env!("CARGO_BIN_EXE_steerhook")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.extension().is_some_and(|e| e == "deb") && path.is_file(),
        "scripts/package.sh should print the .deb's path last:\n{}",
        describe(&out)
    );
    let info =
        String::from_utf8_lossy(&run_ok(Command::new("dpkg-deb").arg("-I").arg(&path)).stdout)
            .into_owned();
    let listing =
        String::from_utf8_lossy(&run_ok(Command::new("dpkg-deb").arg("-c").arg(&path)).stdout)
            .into_owned();
    let entries = listing
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "unexpected dpkg-deb -c line: {line}");
            Entry {
                perms: fields[0].to_owned(),
                owner: fields[1].to_owned(),
                path: fields[5].trim_start_matches('.').to_owned(),
            }
        })
        .collect();
    let root = dir.path().join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&path).arg(&root));
    let control = dir.path().join("control");
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&path).arg(&control));
    Deb {
        _dir: dir,
        path,
        info,
        entries,
        root,
        control,
    }
}

/// `(path or glob, mode)` rows of the table under [`FILE_TABLE_HEADING`].
fn deploy_file_table() -> Vec<(String, u32)> {
    let deploy = read_repo(DEPLOY);
    let after = deploy
        .split_once(FILE_TABLE_HEADING)
        .unwrap_or_else(|| panic!("{DEPLOY} has no {FILE_TABLE_HEADING:?} section"))
        .1;
    after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let path = cells.get(1)?.strip_prefix('`')?.split('`').next()?;
            let mode = u32::from_str_radix(cells.get(2)?.get(..4)?, 8).ok()?;
            Some((path.to_owned(), mode))
        })
        .collect()
}

/// `*` matches any run of characters, nothing else is special.
fn glob_matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (head.len()..=text.len()).any(|i| glob_matches(tail, &text[i..]))
        }
    }
}

#[test]
fn the_deb_installs_exactly_the_files_deploy_md_lists_with_their_modes() {
    let Some(deb) = deb("the_deb_installs_exactly_the_files_deploy_md_lists_with_their_modes")
    else {
        return;
    };
    let table = deploy_file_table();
    assert!(
        table.len() >= 10,
        "read only {} rows under {FILE_TABLE_HEADING:?} in {DEPLOY}: {table:?}",
        table.len()
    );
    let mut problems = Vec::new();
    for entry in &deb.entries {
        if entry.owner != "0/0" {
            problems.push(format!(
                "{} is owned by {}, not root",
                entry.path, entry.owner
            ));
        }
        if !entry.is_file() {
            continue;
        }
        match table.iter().find(|(p, _)| glob_matches(p, &entry.path)) {
            None => problems.push(format!("{} is in the .deb but not in {DEPLOY}", entry.path)),
            Some((_, mode)) if *mode != entry.mode() => problems.push(format!(
                "{} has mode {:04o} in the .deb, {DEPLOY} says {mode:04o}",
                entry.path,
                entry.mode()
            )),
            Some(_) => {}
        }
    }
    for (pattern, _) in &table {
        if !deb
            .entries
            .iter()
            .any(|e| e.is_file() && glob_matches(pattern, &e.path))
        {
            problems.push(format!(
                "{DEPLOY} lists {pattern}, the .deb has no such file"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\ndpkg-deb -c {}:\n{:#?}",
        problems.join("\n"),
        deb.path.display(),
        deb.entries
    );
}

#[test]
fn the_deb_control_names_the_package_its_dependencies_and_the_config_as_a_conffile() {
    let Some(deb) =
        deb("the_deb_control_names_the_package_its_dependencies_and_the_config_as_a_conffile")
    else {
        return;
    };
    let fields: BTreeMap<&str, &str> = deb
        .info
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .collect();
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    for (field, want) in [
        ("Package", "steerhook"),
        ("Version", version.as_str()),
        ("Architecture", "amd64"),
        ("Section", "net"),
    ] {
        assert_eq!(
            fields.get(field).copied(),
            Some(want),
            "{field}:\n{}",
            deb.info
        );
    }
    let depends = fields.get("Depends").copied().unwrap_or_default();
    assert!(
        depends.contains("libc6 (>=") && depends.contains("systemd (>= 248)"),
        "Depends: {depends}"
    );
    let conffiles = std::fs::read_to_string(deb.control.join("conffiles")).expect("conffiles");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/steerhook/steerhook.toml"],
        "the config is the one conffile: an upgrade keeps the operator's edits"
    );
}

#[test]
fn the_unit_sysusers_tmpfiles_config_and_maintainer_scripts_in_the_deb_are_the_repository_files() {
    let Some(deb) = deb(
        "the_unit_sysusers_tmpfiles_config_and_maintainer_scripts_in_the_deb_are_the_repository_files",
    ) else {
        return;
    };
    for (installed, source) in [
        ("/usr/lib/systemd/system/steerhook.service", UNIT),
        (
            "/usr/lib/sysusers.d/steerhook.conf",
            "systemd/steerhook.sysusers",
        ),
        (
            "/usr/lib/tmpfiles.d/steerhook.conf",
            "systemd/steerhook.tmpfiles",
        ),
        ("/etc/steerhook/steerhook.toml", PACKAGED_CONFIG),
        ("/usr/share/doc/steerhook/README.md", "README.md"),
        ("/usr/share/doc/steerhook/DEPLOY.md", DEPLOY),
        (
            "/usr/share/steerhook/nginx/steerhook.conf",
            "deploy/nginx/steerhook.conf",
        ),
        (
            "/usr/share/steerhook/caddy/Caddyfile",
            "deploy/caddy/Caddyfile",
        ),
        (
            "/usr/share/steerhook/prometheus/steerhook.rules.yml",
            "deploy/prometheus/steerhook.rules.yml",
        ),
        (
            "/usr/share/steerhook/grafana/steerhook.json",
            "deploy/grafana/steerhook.json",
        ),
    ] {
        assert!(
            deb.read(installed) == read_repo(source).as_bytes(),
            "{installed} in the .deb differs from {source}"
        );
    }
    for script in ["postinst", "prerm", "postrm"] {
        let source = format!("deploy/debian/{script}");
        assert!(
            std::fs::read(deb.control.join(script)).ok().as_deref()
                == Some(read_repo(&source).as_bytes()),
            "the .deb's {script} differs from {source}"
        );
    }
    // The unit starts the binary where the package puts it.
    let unit = read_repo(UNIT);
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in the unit");
    let program = exec.split_whitespace().next().unwrap_or_default();
    assert_eq!(program, "/usr/bin/steerhook", "ExecStart={exec}");
    assert!(deb.file(program).is_file(), "{program} is not in the .deb");
}

#[test]
fn the_binary_in_the_deb_is_stripped_and_ships_its_own_completions_and_man_pages() {
    let Some(deb) =
        deb("the_binary_in_the_deb_is_stripped_and_ships_its_own_completions_and_man_pages")
    else {
        return;
    };
    // The reader does see what strip removes: the test build still has it.
    let unstripped = elf_section_names(
        &std::fs::read(env!("CARGO_BIN_EXE_steerhook")).expect("read the test build"),
    );
    assert!(unstripped.iter().any(|s| s == ".symtab"), "{unstripped:?}");
    let sections = elf_section_names(&deb.read("/usr/bin/steerhook"));
    assert!(
        sections.iter().any(|s| s == ".text"),
        "sections read: {sections:?}"
    );
    let kept: Vec<&String> = sections
        .iter()
        .filter(|s| *s == ".symtab" || s.starts_with(".debug_info") || s.starts_with(".debug_line"))
        .collect();
    assert!(
        kept.is_empty(),
        "/usr/bin/steerhook is not stripped: it has {kept:?}"
    );
    let out = run_ok(Command::new(deb.file("/usr/bin/steerhook")).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("steerhook {}", env!("CARGO_PKG_VERSION"))
    );
    for (installed, shell) in [
        ("/usr/share/bash-completion/completions/steerhook", "bash"),
        ("/usr/share/zsh/vendor-completions/_steerhook", "zsh"),
        (
            "/usr/share/fish/vendor_completions.d/steerhook.fish",
            "fish",
        ),
    ] {
        let made = run_ok(steerhook_command().args(["completions", shell])).stdout;
        assert!(
            deb.read(installed) == made,
            "{installed} is not `steerhook completions {shell}`"
        );
    }
    let pages: BTreeSet<String> = std::fs::read_dir(deb.file("/usr/share/man/man1"))
        .expect("man1 in the .deb")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let mut wanted: BTreeSet<String> = BTreeSet::from(["steerhook.1.gz".to_owned()]);
    for sub in visible_subcommands() {
        wanted.insert(format!("steerhook-{sub}.1.gz"));
    }
    assert!(
        wanted.is_subset(&pages),
        "man pages missing from the .deb: {:?}",
        wanted.difference(&pages).collect::<Vec<_>>()
    );
}

/// The section names of a little-endian ELF64 file (what `readelf -S`
/// lists), read from its section header table.
fn elf_section_names(elf: &[u8]) -> Vec<String> {
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at =
        |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) as usize;
    let u64_at =
        |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes")) as usize;
    assert!(
        elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1,
        "not a little-endian ELF64 file"
    );
    let (table, entry_size, count, names_index) =
        (u64_at(0x28), u16_at(0x3A), u16_at(0x3C), u16_at(0x3E));
    let header = |i: usize| table + i * entry_size;
    let names_offset = u64_at(header(names_index) + 0x18);
    (0..count)
        .map(|i| {
            let start = names_offset + u32_at(header(i));
            let end = elf[start..]
                .iter()
                .position(|&b| b == 0)
                .map_or(elf.len(), |n| start + n);
            String::from_utf8_lossy(&elf[start..end]).into_owned()
        })
        .collect()
}

fn visible_subcommands() -> Vec<String> {
    steerhook::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect()
}

/// The packaged config, with a secret where the unit's LoadCredential=
/// puts it, is valid; with the empty placeholder tmpfiles creates, the
/// daemon refuses to start and names the key.
#[test]
fn the_packaged_config_passes_check_config_once_the_webhook_secret_is_in_the_credentials() {
    let creds = tempfile::tempdir().expect("temp dir");
    let secrets = creds.path().join("webhook_secrets");
    std::fs::write(&secrets, "").expect("placeholder");
    let check = || {
        steerhook_command()
            .arg("--config")
            .arg(repo_path(PACKAGED_CONFIG))
            .arg("check-config")
            .env("CREDENTIALS_DIRECTORY", creds.path())
            .output()
            .expect("run check-config")
    };
    let out = check();
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("webhook.secrets"),
        "the error names the key:\n{}",
        describe(&out)
    );

    std::fs::write(&secrets, "whsec_packaged_config_test\n").expect("secret");
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "listen            127.0.0.1:8787",
        "webhook secrets   1 configured",
        "database          sqlite /var/lib/steerhook/steerhook.db",
    ] {
        assert!(stdout.contains(want), "{want:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("whsec_packaged_config_test"),
        "a secret printed"
    );
}

/// Key names per section, commented-out ones included: what a file documents.
fn documented_keys(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let body = line.strip_prefix('#').unwrap_or(line).trim_start();
        if line.starts_with([' ', '\t']) {
            continue; // a comment's continuation
        }
        if let Some(rest) = body.strip_prefix('[') {
            let name = rest.trim_start_matches('[');
            if let Some(end) = name.find(']') {
                section = name[..end].to_owned();
                continue;
            }
        }
        let Some((key, value)) = body.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !section.is_empty()
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !value.trim().is_empty()
        {
            keys.entry(section.clone())
                .or_default()
                .insert(key.to_owned());
        }
    }
    keys
}

/// deploy/debian/steerhook.toml is config.example.toml set up for the
/// service; this keeps the two from drifting: the same keys documented in
/// each section, and the same value for every active key but the few the
/// service needs different.
#[test]
fn the_packaged_config_documents_the_same_keys_and_defaults_as_config_example_toml() {
    /// Set differently on purpose (docs/DEPLOY.md says why).
    const SERVICE_SETTINGS: [(&str, &str); 3] = [
        ("server", "trusted_proxies"),
        ("webhook", "secrets"),
        ("storage", "path"),
    ];
    let example_text = read_repo(EXAMPLE_CONFIG);
    let packaged_text = read_repo(PACKAGED_CONFIG);

    let example_keys = documented_keys(&example_text);
    let packaged_keys = documented_keys(&packaged_text);
    assert!(example_keys.len() >= 8, "sections read: {example_keys:?}");
    for (section, keys) in &example_keys {
        let packaged = packaged_keys.get(section).cloned().unwrap_or_default();
        let missing: Vec<_> = keys.difference(&packaged).collect();
        assert!(
            missing.is_empty(),
            "[{section}] {missing:?} documented in {EXAMPLE_CONFIG} but not in {PACKAGED_CONFIG}"
        );
        let extra: Vec<_> = packaged
            .difference(keys)
            .filter(|k| {
                !k.strip_suffix("_file")
                    .is_some_and(|base| keys.contains(base))
            })
            .collect();
        assert!(
            extra.is_empty(),
            "[{section}] {extra:?} in {PACKAGED_CONFIG} but not in {EXAMPLE_CONFIG}"
        );
    }

    let example: toml::Table = example_text.parse().expect("config.example.toml is TOML");
    let packaged: toml::Table = packaged_text.parse().expect("the packaged config is TOML");
    for (section, table) in &example {
        let Some(table) = table.as_table() else {
            continue; // [[hook]]: the packaged file has none active
        };
        for (key, value) in table {
            if SERVICE_SETTINGS.contains(&(section.as_str(), key.as_str())) {
                continue;
            }
            assert_eq!(
                packaged.get(section).and_then(|t| t.get(key)),
                Some(value),
                "{section}.{key}: {PACKAGED_CONFIG} should have the example's default"
            );
        }
    }
    for (section, table) in &packaged {
        for key in table.as_table().into_iter().flat_map(|t| t.keys()) {
            let known = example.get(section).and_then(|t| t.get(key)).is_some()
                || (section.as_str(), key.as_str()) == ("webhook", "secrets_file");
            assert!(known, "{section}.{key} is set in {PACKAGED_CONFIG} only");
        }
    }
    assert!(
        !packaged.contains_key("hook"),
        "the packaged config runs no hook: the example's save-event.sh is not installed"
    );
}

/// Every LoadCredential= source exists after the postinst's
/// `systemd-tmpfiles --create` (a missing one stops the service from
/// starting), root-only, and the state directory is private to steerhook.
#[test]
fn tmpfiles_creates_every_credential_the_unit_loads_and_a_private_state_directory() {
    let tmpfiles = read_repo("systemd/steerhook.tmpfiles");
    let lines: Vec<Vec<&str>> = tmpfiles
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let find = |path: &str| {
        lines
            .iter()
            .find(|f| f.get(1) == Some(&path))
            .unwrap_or_else(|| panic!("no tmpfiles line for {path}"))
    };
    assert_eq!(
        find(CREDENTIALS_DIR)[..5],
        ["d", CREDENTIALS_DIR, "0700", "root", "root"]
    );
    assert_eq!(
        find("/var/lib/steerhook")[..5],
        ["d", "/var/lib/steerhook", "0700", "steerhook", "steerhook"]
    );
    let unit = read_repo(UNIT);
    let sources: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .filter_map(|v| v.split_once(':'))
        .map(|(_, source)| source)
        .collect();
    assert_eq!(sources.len(), 3, "{sources:?}");
    for source in sources {
        assert_eq!(
            find(source)[..5],
            ["f", source, "0600", "root", "root"],
            "tmpfiles creates {source} empty and root-only"
        );
    }
}

/// The postinst runs no command that enables or starts the service (the
/// secret is not set yet), only daemon-reload and, on upgrade, try-restart;
/// and it tells the next steps.
#[test]
fn the_postinst_never_starts_the_service_and_prints_the_next_steps() {
    let postinst = read_repo("deploy/debian/postinst");
    let mut in_message = false;
    for line in postinst.lines() {
        let code = line.trim();
        if code.starts_with("cat <<MSG") {
            in_message = true;
        } else if code == "MSG" {
            in_message = false;
        } else if !in_message && !code.starts_with('#') && code.contains("systemctl") {
            assert!(
                code.starts_with("systemctl daemon-reload")
                    || code.starts_with("systemctl try-restart steerhook.service"),
                "the postinst runs `{code}`"
            );
        }
    }
    for step in [
        "/etc/steerhook/credentials/webhook_secrets",
        "steerhook check-config",
        "sudo systemctl enable --now steerhook",
        "steerhook doctor",
    ] {
        assert!(
            postinst.contains(step),
            "the postinst's message should say {step:?}"
        );
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_offer_every_subcommand() {
    let subcommands = visible_subcommands();
    assert!(subcommands.len() >= 9, "{subcommands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(steerhook_command().args(["completions", shell]));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.len() > 1000, "{shell}: {script}");
        for sub in &subcommands {
            assert!(
                script.contains(sub.as_str()),
                "the {shell} completions do not offer {sub}"
            );
        }
    }
    let bash = run_ok(steerhook_command().args(["completions", "bash"])).stdout;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("steerhook.bash");
    std::fs::write(&file, bash).expect("write");
    run_ok(Command::new("bash").arg("-n").arg(&file));
    let out = steerhook_command()
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn every_man_page_renders_without_warnings() {
    let test = "every_man_page_renders_without_warnings";
    let Some(man) = require_tool(test, "man", "apt-get install man-db") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_ok(steerhook_command().arg("man").arg("--out").arg(dir.path()));
    let pages: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let names: BTreeSet<String> = pages
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
        .collect();
    for sub in visible_subcommands() {
        assert!(
            names.contains(&format!("steerhook-{sub}.1")),
            "no page for {sub}: {names:?}"
        );
    }
    assert!(names.contains("steerhook.1"), "{names:?}");
    assert!(
        names.contains("steerhook-events-list.1"),
        "nested commands get pages: {names:?}"
    );
    for page in &pages {
        let out = run_ok(
            Command::new(&man)
                .args(["--warnings", "-l"])
                .arg(page)
                .env("MANWIDTH", "80")
                .env("LC_ALL", "C.UTF-8")
                .env_remove("MAN_KEEP_FORMATTING"),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS") && text.contains("steerhook"),
            "{} renders as:\n{text}",
            page.display()
        );
        assert!(warnings.trim().is_empty(), "{}: {warnings}", page.display());
    }
    let top = run_ok(steerhook_command().arg("man")).stdout;
    assert!(
        top.starts_with(b".ie") || top.starts_with(b".TH"),
        "`steerhook man` prints steerhook(1) in roff"
    );
}
