//! The README's tour, as a newcomer types it: `serve` on the shipped
//! `config.example.toml` (SQLite file in the working directory, no API key),
//! `send-test`, the example hook fires, `events list` / `events show`, then
//! the operator's day: `hooks pause|list|resume`, `replay --status failed`,
//! `quarantine list|show`.

use std::process::Stdio;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_works_on_the_shipped_example_config() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("examples/hooks")).unwrap();
    std::fs::copy(
        repo_path("config.example.toml"),
        work.path().join("config.example.toml"),
    )
    .unwrap();
    std::fs::copy(
        repo_path("examples/hooks/save-event.sh"),
        work.path().join("examples/hooks/save-event.sh"),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let run = |args: &[&str]| {
        steerhook_command()
            .current_dir(work.path())
            .env("STEERHOOK_CONFIG", "config.example.toml")
            .env("STEERHOOK__SERVER__LISTEN", &listen)
            .args(args)
            .output()
            .unwrap()
    };

    let check = run(&["check-config"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(!String::from_utf8_lossy(&check.stdout).contains("whsec_example_change_me"));

    let mut serve = Daemon(
        steerhook_command()
            .current_dir(work.path())
            .env("STEERHOOK_CONFIG", "config.example.toml")
            .env("STEERHOOK__SERVER__LISTEN", &listen)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    wait_for_async(DEADLINE, "serve to come up", || {
        let probe = client.get(format!("http://{listen}/healthz")).send();
        async move { probe.await.ok().map(drop) }
    })
    .await;
    assert!(
        work.path().join("steerhook.db").exists(),
        "the database is in the working directory"
    );

    let sent = run(&["send-test", "--run-id", "run_tour", "--event", "run.failed"]);
    let stdout = String::from_utf8_lossy(&sent.stdout).into_owned();
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(stdout.contains("202"), "{stdout}");
    let again = run(&["send-test", "--run-id", "run_tour", "--event", "run.failed"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("duplicate"));

    let out_dir = work.path().join("hook-output");
    let saved = wait_for(DEADLINE, "the example hook to fire", || {
        std::fs::read_dir(&out_dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
    })
    .await;
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(doc["event"]["runId"], "run_tour");
    assert_eq!(
        doc["run"],
        serde_json::Value::Null,
        "no [opensteer] in the example"
    );

    let list = run(&["events", "list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains("run_tour"), "{list}");
    let id = saved.file_stem().unwrap().to_str().unwrap().to_owned();
    let start = Instant::now();
    loop {
        let show = run(&["events", "show", &id]);
        let show = String::from_utf8_lossy(&show.stdout).into_owned();
        if show.contains("hook save-event: succeeded") {
            assert!(show.contains("saved run.failed for run run_tour"), "{show}");
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "events show never said succeeded:\n{show}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // The operator's day: pause a hook, events still come in, resume.
    let text = |out: std::process::Output| {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(text(run(&["hooks", "pause", "save-event"])).contains("paused"));
    let sent = text(run(&["send-test", "--run-id", "run_paused"]));
    let answer: serde_json::Value = serde_json::from_str(sent.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {sent}"));
    let paused_id = answer["id"].as_str().unwrap().to_owned();
    let listed = text(run(&["hooks", "list"]));
    let line = listed
        .lines()
        .find(|l| l.starts_with("save-event"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(line.split_whitespace().nth(2), Some("yes"), "{listed}");
    let show = text(run(&["events", "show", &paused_id]));
    assert!(show.contains("status    pending"), "{show}");
    assert!(text(run(&["hooks", "resume", "save-event"])).contains("resumed"));
    wait_for(
        DEADLINE,
        "the resumed hook to save the paused event",
        || {
            work.path()
                .join("hook-output")
                .join(format!("{paused_id}.json"))
                .exists()
                .then_some(())
        },
    )
    .await;
    let replay = text(run(&["replay", "--status", "failed", "--dry-run"]));
    assert!(replay.contains("no failed deliveries"), "{replay}");

    // A signed body that is not an event is quarantined, and can be read.
    let refused = client
        .post(format!("http://{listen}/webhooks/opensteer"))
        .header(
            "x-opensteer-signature",
            steerhook::signature::sign(
                steerhook::config::EXAMPLE_WEBHOOK_SECRET,
                system_now_secs(),
                b"[1, 2]",
            ),
        )
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let quarantined = text(run(&["quarantine", "list"]));
    let id = quarantined
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{quarantined}"))
        .to_owned();
    let shown = text(run(&["quarantine", "show", &id]));
    assert!(shown.contains("\nbody\n[1, 2]"), "{shown}");

    kill(Pid::from_raw(serve.0.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(serve.0.wait().unwrap().code(), Some(0));

    // Run from the repository root, the tour leaves these behind: git must
    // ignore every one of them.
    let Some(git) = crate::support::tools::require_tool(
        "the_readme_tour_works_on_the_shipped_example_config (.gitignore)",
        "git",
        "apt-get install -y git",
    ) else {
        return;
    };
    let mut left: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !["config.example.toml", "examples"].contains(&name.as_str()))
        .collect();
    left.sort();
    assert!(left.iter().any(|n| n == "hook-output"), "{left:?}");
    assert!(left.iter().any(|n| n == "steerhook.db.lock"), "{left:?}");
    for name in &left {
        // A trailing slash says "a directory" to git, which cannot look:
        // the path does not exist in the repository.
        let name = if work.path().join(name).is_dir() {
            format!("{name}/")
        } else {
            name.clone()
        };
        let ignored = std::process::Command::new(&git)
            .current_dir(repo_path(""))
            .args(["check-ignore", "--no-index", "-q", &name])
            .status()
            .unwrap();
        assert!(
            ignored.success(),
            "the tour leaves {name}, which .gitignore misses"
        );
    }
}
