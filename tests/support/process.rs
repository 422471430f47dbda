//! Reading processes' state from /proc (Linux): whether hook processes
//! and their process groups are gone, memory and CPU use, a hook's `env -0`.

/// The state letter of /proc/<pid>/stat, or `None` when the process is gone.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().next()?.chars().next()
}

/// Whether `pid` runs (a zombie counts as dead).
pub fn is_alive(pid: i32) -> bool {
    !matches!(process_state(pid), None | Some('Z') | Some('X'))
}

/// Live processes whose process group is `pgid`.
pub fn live_members_of_group(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            // After the name: state, ppid, pgrp.
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            fields.get(2).and_then(|pgrp| pgrp.parse::<i32>().ok()) == Some(pgid)
        })
        .filter(|pid| is_alive(*pid))
        .collect()
}

/// Waits until every one of `pids` and every member of the process group
/// `pgid` is gone.
pub async fn wait_until_gone(pids: &[i32], pgid: i32) {
    super::poll::poll_until(super::DEADLINE, "the hook's processes to be gone", || {
        pids.iter().all(|pid| !is_alive(*pid)) && live_members_of_group(pgid).is_empty()
    })
    .await;
}

/// A field of /proc/<pid>/status in KiB, e.g. `VmRSS:` (`"self"` for this
/// process).
pub fn vm_kib(pid: &str, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// CPU time (user + system) process `pid` has used so far, from /proc
/// (`"self"` for this process).
pub fn cpu_time(pid: &str) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // After the command name, which is in parentheses and may hold spaces:
    // state is field 3 of the full line, utime 14, stime 15.
    let after_name = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on every Linux architecture we run on.
    std::time::Duration::from_millis(ticks * 10)
}

/// Parses `env -0` output (NUL-separated `NAME=value` entries) into a map.
pub fn parse_env(raw: &[u8]) -> std::collections::BTreeMap<String, String> {
    raw.split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8(entry.to_vec()).expect("utf-8 env entry");
            let (name, value) = entry.split_once('=').expect("NAME=value");
            (name.to_string(), value.to_string())
        })
        .collect()
}
