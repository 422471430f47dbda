//! Reading other processes' state from /proc (Linux), for tests that check
//! what hook processes and their process groups did.

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
