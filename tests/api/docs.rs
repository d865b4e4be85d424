//! The README's configuration table against `tenantd serve --help`: every
//! flag the server takes is documented with its environment variable and
//! default, and the table names no flag that does not exist.

use std::collections::BTreeSet;
use std::process::Command;

/// `--flag` names in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            found.insert(name);
        }
    }
    found
}

/// The help text, one entry per flag: its name, its env var, its default.
fn help_entries(help: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let mut entries = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut flush = |entry: Option<(String, String)>| {
        if let Some((flag, text)) = entry {
            let env = text.split("[env: ").nth(1).map(|rest| {
                rest.split(['=', ']'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            });
            let default = text.split("[default: ").nth(1).map(|rest| {
                rest.split(']')
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_owned()
            });
            entries.push((flag, env, default));
        }
    };
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            flush(current.take());
            let flag = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or("")
                .to_owned();
            current = Some((flag, String::new()));
        } else if let Some((_, text)) = current.as_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    flush(current);
    entries
}

#[test]
fn the_configuration_table_matches_serve_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .expect("run tenantd serve --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table: String = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration section")
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .collect::<Vec<_>>()
        .join("\n");

    let entries = help_entries(&help);
    assert!(
        entries.len() > 30,
        "parsed {} flags from:\n{help}",
        entries.len()
    );
    for (flag, env, default) in &entries {
        if flag == "help" {
            continue;
        }
        let row = table
            .lines()
            .find(|row| {
                let first_cell = row.split('|').nth(1).unwrap_or("");
                flags(first_cell).contains(flag)
            })
            .unwrap_or_else(|| panic!("--{flag} is missing from the README's configuration table"));
        if let Some(env) = env {
            assert!(
                row.contains(&format!("`{env}`")),
                "--{flag}: README does not name {env}:\n{row}"
            );
        }
        if let Some(default) = default {
            let cells: Vec<&str> = row.split('|').collect();
            let defaults = cells.get(3).copied().unwrap_or("");
            assert!(
                defaults.contains(&format!("`{default}`")) || defaults.contains(default.as_str()),
                "--{flag}: README default {defaults:?}, help says {default:?}"
            );
        }
    }
    let known: BTreeSet<String> = entries.iter().map(|(f, _, _)| f.clone()).collect();
    for row in table.lines() {
        let first_cell = row.split('|').nth(1).unwrap_or("");
        for flag in flags(first_cell) {
            assert!(
                known.contains(&flag),
                "README documents --{flag}, which serve does not take"
            );
        }
    }
}
