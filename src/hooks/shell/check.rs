//! The checks `doctor` runs on a shell hook's command before any event
//! comes: its program, and the script an interpreter is given, exist, can
//! run, and cannot be changed by others.

/// Checks that a hook's command can be started and finds what it runs: its
/// program exists, is executable and is not writable by group or others;
/// so is the script an interpreter is given (`/bin/sh etl.sh`: a missing
/// `etl.sh` would otherwise only show when the first event fails), and any
/// other argument that names a script file.
pub(super) fn check_command(
    command: &[String],
    working_dir: Option<&std::path::Path>,
) -> Result<String, String> {
    let program = command.first().ok_or("the command is empty")?;
    let mut proved = vec![check_program(program, working_dir)?];
    for (i, arg) in script_arguments(command) {
        proved.push(check_script(arg, working_dir).map_err(|e| format!("argument {i}: {e}"))?);
    }
    Ok(proved.join("; "))
}

/// Interpreters whose first operand is the script they run (by the name
/// without a version: `python3.11` is `python`).
const INTERPRETERS: [&str; 13] = [
    "sh", "bash", "dash", "zsh", "ksh", "python", "perl", "ruby", "node", "nodejs", "php", "lua",
    "Rscript",
];

/// Options of `interpreter` after which the command runs code given on the
/// command line (`sh -c '...'`, `perl -e '...'`, `python -m module`): it
/// then has no script file.
fn runs_inline_code(interpreter: &str, option: &str) -> bool {
    let shell = matches!(interpreter, "sh" | "bash" | "dash" | "zsh" | "ksh");
    match option {
        "-c" => shell || interpreter == "python",
        "-m" => interpreter == "python",
        "-e" | "--eval" | "-p" | "--print" => !shell,
        "-E" => interpreter == "perl",
        "-r" => interpreter == "php",
        _ => false,
    }
}

/// Options of `interpreter` whose value is the next argument (not a script).
fn takes_a_value(interpreter: &str, option: &str) -> bool {
    match interpreter {
        "sh" | "bash" | "dash" | "zsh" | "ksh" => matches!(option, "-o" | "+o" | "-O" | "+O"),
        "python" => matches!(option, "-W" | "-X" | "-Q"),
        "node" | "nodejs" => matches!(option, "-r" | "--require" | "--import" | "--loader"),
        "ruby" | "perl" => matches!(option, "-I" | "-r"),
        _ => false,
    }
}

/// The name an interpreter is known by: `/usr/bin/python3.11` -> `python`.
fn interpreter_name(program: &str) -> Option<&'static str> {
    let base = program.rsplit('/').next().unwrap_or(program);
    let base = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.iter().copied().find(|i| *i == base)
}

/// File extensions of scripts: an argument ending so names a file that
/// must exist (`--config etl.py` is read, not written).
const SCRIPT_EXTENSIONS: [&str; 10] = [
    ".sh", ".bash", ".py", ".pl", ".rb", ".js", ".mjs", ".cjs", ".php", ".lua",
];

/// The arguments of `command` that name a script file, with their index:
/// the first operand after an interpreter (through `env`, too), and any
/// argument ending in a script extension.
fn script_arguments(command: &[String]) -> Vec<(usize, &str)> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    // The code of `sh -c CODE`: it may well mention a file.
    let mut inline_code = None;
    let mut i = 0;
    // `/usr/bin/env [-i] [-u NAME] [VAR=value...] interpreter ...`
    if command
        .first()
        .is_some_and(|p| p.rsplit('/').next() == Some("env"))
    {
        i = 1;
        while let Some(arg) = command.get(i) {
            if arg == "-u" || arg == "--unset" {
                i += 2;
            } else if arg.starts_with('-') || arg.contains('=') {
                i += 1;
            } else {
                break;
            }
        }
    }
    if let Some(interpreter) = command.get(i).and_then(|p| interpreter_name(p)) {
        let mut j = i + 1;
        while let Some(arg) = command.get(j) {
            if arg == "--" {
                j += 1;
                if let Some(script) = command.get(j) {
                    found.push((j, script));
                }
                break;
            }
            if runs_inline_code(interpreter, arg) {
                inline_code = Some(j + 1);
                break;
            }
            if arg.starts_with('-') || (arg.starts_with('+') && arg.len() > 1) {
                j += if takes_a_value(interpreter, arg) {
                    2
                } else {
                    1
                };
                continue;
            }
            found.push((j, arg));
            break;
        }
    }
    for (k, arg) in command.iter().enumerate().skip(1) {
        let named = Some(k) != inline_code
            && !arg.starts_with('-')
            && !arg.contains('=')
            && !arg.contains(char::is_whitespace)
            && SCRIPT_EXTENSIONS.iter().any(|ext| arg.ends_with(ext));
        if named && !found.iter().any(|(f, _)| *f == k) {
            found.push((k, arg));
        }
    }
    found.sort_unstable();
    found
}

/// Checks that a script a hook runs exists, is a file, and is not writable
/// by group or others (whoever can write it runs code as steerhook).
fn check_script(arg: &str, working_dir: Option<&std::path::Path>) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let p = std::path::Path::new(arg);
    let (path, relative_to) = match (p.is_relative(), working_dir) {
        (false, _) => (p.to_path_buf(), String::new()),
        (true, Some(dir)) => (
            dir.join(p),
            format!(" (relative to working_dir {})", dir.display()),
        ),
        (true, None) => {
            let here = std::env::current_dir().unwrap_or_default();
            (
                here.join(p),
                format!(
                    " (relative to the daemon's working directory; here {}: set working_dir to be sure)",
                    here.display()
                ),
            )
        }
    };
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("{}: {e}{relative_to}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file{relative_to}", path.display()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); anyone who can write it runs code as steerhook: chmod go-w",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(format!("runs {}", path.display()))
}

/// Checks that a hook's program exists, is executable and is not writable by group or others.
fn check_program(program: &str, working_dir: Option<&std::path::Path>) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        match (p.is_relative(), working_dir) {
            (true, Some(dir)) => dir.join(p),
            _ => p,
        }
    } else {
        let search =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        search
            .split(':')
            .map(|d| std::path::Path::new(d).join(program))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{program} not found in PATH"))?
    };
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if mode & 0o111 == 0 {
        return Err(format!("{} is not executable (chmod +x)", path.display()));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); anyone who can write it runs code as steerhook: chmod go-w",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(format!("{} executable", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn the_script_an_interpreter_runs_is_found_and_inline_code_is_not() {
        let cases: [(&[&str], &[usize]); 13] = [
            (&["/bin/sh", "does-not-exist.sh"], &[1]),
            (&["/bin/sh", "-e", "etl"], &[2]),
            (&["/bin/bash", "-o", "pipefail", "etl"], &[3]),
            (&["/bin/sh", "-c", "echo hi > out.sh", "name"], &[]),
            (&["/bin/sh", "-c", "./etl.sh", "name"], &[]),
            (
                &["/usr/bin/python3.11", "-u", "load.py", "--target", "prod"],
                &[2],
            ),
            (&["python3", "-m", "etl.load"], &[]),
            (&["/usr/bin/perl", "-e", "print 1"], &[]),
            (
                &["/usr/bin/env", "-u", "HOME", "X=1", "node", "load.mjs"],
                &[5],
            ),
            (&["/usr/bin/node", "-r", "dotenv/config", "load.js"], &[3]),
            (&["/opt/etl/load", "--source", "opensteer"], &[]),
            (
                &["/opt/etl/load", "--hook", "extra/check.py", "--out=x.py"],
                &[2],
            ),
            (&["/bin/sh", "--", "-weird-name.sh"], &[2]),
        ];
        for (command, want) in cases {
            let got: Vec<usize> = script_arguments(&args(command))
                .iter()
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(got, want, "{command:?}");
        }
    }

    #[test]
    fn a_missing_or_writable_script_fails_the_check_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let missing =
            check_command(&args(&["/bin/sh", "does-not-exist.sh"]), Some(dir.path())).unwrap_err();
        assert!(
            missing.contains("does-not-exist.sh") && missing.contains("working_dir"),
            "{missing}"
        );
        let script = dir.path().join("etl.sh");
        std::fs::write(&script, "exit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o666)).unwrap();
        let writable = check_command(&args(&["/bin/sh", "etl.sh"]), Some(dir.path())).unwrap_err();
        assert!(
            writable.contains("writable by group or others"),
            "{writable}"
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ok = check_command(&args(&["/bin/sh", "etl.sh"]), Some(dir.path())).unwrap();
        assert!(
            ok.contains("/bin/sh executable") && ok.contains("runs ") && ok.contains("etl.sh"),
            "{ok}"
        );
    }
}
