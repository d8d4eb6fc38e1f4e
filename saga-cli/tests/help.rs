//! Each command's `--help`, held as a snapshot in `tests/help/<command>.txt`:
//! a one-line purpose first and an example invocation last. A changed help
//! text fails here until the snapshot is rewritten on purpose:
//! `SAGA_SNAPSHOTS=overwrite cargo test -p saga-cli --test help`, then read.

use std::path::Path;
use std::process::Command;

const COMMANDS: &[&str] = &[
    "list", "show", "watch", "diagram", "resume", "abandon", "cancel",
];

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "saga {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_command_help_matches_its_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/help");
    let overwrite = std::env::var("SAGA_SNAPSHOTS").as_deref() == Ok("overwrite");
    let mut differ = Vec::new();
    for (name, args) in std::iter::once(("saga", &[][..]))
        .chain(COMMANDS.iter().map(|c| (*c, std::slice::from_ref(c))))
    {
        let text = help(args);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            !first.is_empty() && text.lines().nth(1) == Some(""),
            "`{name}`: the help should open with a one-line purpose: {text}"
        );
        let last = text.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("Example: ") && last.contains("saga "),
            "`{name}`: the help should end with an example: {text}"
        );
        let path = dir.join(format!("{name}.txt"));
        if overwrite {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let held = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (SAGA_SNAPSHOTS=overwrite writes it)",
                path.display()
            )
        });
        if held != text {
            differ.push(format!("--- {}\n{held}+++ now\n{text}", path.display()));
        }
    }
    assert!(
        differ.is_empty(),
        "help changed (SAGA_SNAPSHOTS=overwrite to accept):\n{}",
        differ.join("\n")
    );
}
