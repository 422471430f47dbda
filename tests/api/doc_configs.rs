//! Every configuration in README.md and docs/ is one `check-config` accepts:
//! an operator copies them as they are.

use std::path::{Path, PathBuf};

use crate::support::prelude::*;

/// A TOML block of a document: where it starts and its text.
struct Block {
    file: PathBuf,
    line: usize,
    text: String,
}

fn toml_blocks(file: &Path) -> Vec<Block> {
    let doc = std::fs::read_to_string(file).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match &mut open {
            None if line.trim_start() == "```toml" => open = Some((i + 2, String::new())),
            Some((start, text)) if line.trim_start().starts_with("```") => {
                blocks.push(Block {
                    file: file.to_owned(),
                    line: *start,
                    text: std::mem::take(text),
                });
                open = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The documents: README.md and docs/*.md.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The `*_file = "name"` keys of `text`: (key, name), for placeholder
/// credential files.
fn credential_files(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let key = key.trim().strip_suffix("_file")?;
            let value = value.trim().strip_prefix('"')?;
            Some((key.to_owned(), value[..value.find('"')?].to_owned()))
        })
        .filter(|(_, name)| !name.starts_with('/'))
        .collect()
}

/// A value the secret `key` accepts.
fn placeholder(key: &str) -> &'static str {
    match key {
        "url" => "postgres://steerhook@db.internal:5432/steerhook",
        // Valid for every other secret (a Standard Webhooks key is base64).
        _ => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
}

/// A whole configuration (it has `[server]`) as it is; a fragment (a hook,
/// a section) after the smallest configuration that runs.
fn as_config(block: &Block, dir: &Path) -> String {
    if block
        .text
        .lines()
        .any(|l| l.trim_start().starts_with("[server]"))
    {
        return block.text.clone();
    }
    format!(
        "[server]\nlisten = \"127.0.0.1:8787\"\n[webhook]\nsecrets = [\"whsec_docs\"]\n[storage]\npath = {}\n{}",
        toml_str(&dir.join("steerhook.db").display().to_string()),
        block.text
    )
}

#[test]
fn every_config_block_in_the_readme_and_docs_passes_check_config() {
    let mut checked = 0;
    let mut refused = Vec::new();
    for doc in documents() {
        for block in toml_blocks(&doc) {
            let dir = tempfile::tempdir().unwrap();
            let creds = dir.path().join("credentials");
            std::fs::create_dir(&creds).unwrap();
            for (key, name) in credential_files(&block.text) {
                std::fs::write(creds.join(name), format!("{}\n", placeholder(&key))).unwrap();
            }
            let config = dir.path().join("steerhook.toml");
            std::fs::write(&config, as_config(&block, dir.path())).unwrap();
            let out = steerhook_command()
                .current_dir(dir.path())
                .env("CREDENTIALS_DIRECTORY", &creds)
                .arg("--config")
                .arg(&config)
                .arg("check-config")
                .output()
                .unwrap();
            checked += 1;
            if !out.status.success() {
                refused.push(format!(
                    "{}:{}: {}",
                    block.file.display(),
                    block.line,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    assert!(checked >= 3, "the blocks were found ({checked})");
    assert!(
        refused.is_empty(),
        "check-config refuses:\n{}",
        refused.join("\n")
    );
}
