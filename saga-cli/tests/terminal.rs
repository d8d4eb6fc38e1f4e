//! The `saga` binary on a real terminal (a `tmux` pane), read back from the
//! screen: coloured statuses on a terminal, none with `NO_COLOR` or when
//! piped, and whole ids.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use saga_core::store::SqliteStore;
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo};

const LONG_ID: &str = "0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a-with-a-suffix-past-32";

/// A store with one completed execution under a long id and one compensated.
async fn store(dir: &Path) -> PathBuf {
    let db = dir.join("sagas.db");
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let saga = Saga::builder("order")
        .step(Step::new("ship", |fail: &mut bool, _: &StepInfo<'_>| {
            if *fail {
                Err(StepError::new("no courier"))
            } else {
                Ok(())
            }
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    for (id, fail) in [(LONG_ID, false), ("failed-1", true)] {
        let id = engine.start_with_id("order", id, fail).await.unwrap();
        engine.wait(&id).await.or_else(ended).unwrap();
    }
    db
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket, "-f", "/dev/null"]);
        cmd
    }

    /// Runs `shell` in a new 250-column pane and returns the screen, with
    /// its colours as SGR sequences (`capture-pane -e`), once the command
    /// has printed its end marker.
    fn screen(&self, name: &str, shell: &str) -> String {
        let script = format!("{shell}; echo __END__; sleep 600");
        let status = self
            .cmd()
            .args(["new-session", "-d", "-s", name, "-x", "250", "-y", "40"])
            .arg(script)
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        // Polls until the marker shows; bounded so a hung command fails the
        // test instead of hanging it (no assertion on the time itself).
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .cmd()
                .args(["capture-pane", "-p", "-e", "-t", name])
                .output()
                .unwrap();
            let screen = String::from_utf8_lossy(&out.stdout).into_owned();
            if screen.contains("__END__") {
                return screen;
            }
            assert!(Instant::now() < end, "no end marker on screen: {screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[tokio::test]
async fn statuses_are_coloured_on_a_terminal_only_and_ids_are_whole() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("saga-cli-terminal");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = store(&dir).await;

    // Piped (as every test's output is): never colour.
    let out = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["--store", db.to_str().unwrap(), "list"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!out.stdout.contains(&0x1b), "colour in a pipe");

    if Command::new("tmux").arg("-V").output().is_err() {
        println!("SKIPPED: tmux is not installed (apt-get install tmux), so no terminal to read");
        return;
    }
    let tmux = Tmux {
        socket: format!("saga-cli-test-{}", std::process::id()),
    };
    let saga = format!(
        "'{}' --store '{}'",
        env!("CARGO_BIN_EXE_saga"),
        db.display()
    );

    let screen = tmux.screen("tty", &format!("env -u NO_COLOR TERM=xterm {saga} list"));
    let plain = strip(&screen);
    assert!(plain.contains(LONG_ID), "id not whole on screen: {plain}");
    let failed_row = screen
        .lines()
        .find(|l| l.contains("failed-1"))
        .unwrap_or_else(|| panic!("no failed row: {screen:?}"));
    assert!(
        failed_row.contains("\u{1b}["),
        "no colour on a TTY: {failed_row:?}"
    );
    assert!(strip(failed_row).contains("compensated"), "{failed_row:?}");
    let show = tmux.screen(
        "show",
        &format!("env -u NO_COLOR TERM=xterm {saga} show failed-1"),
    );
    let status = show.lines().find(|l| l.starts_with("status")).unwrap();
    assert!(status.contains("\u{1b}["), "no colour in show: {status:?}");

    let screen = tmux.screen("nocolor", &format!("env NO_COLOR=1 TERM=xterm {saga} list"));
    assert!(strip(&screen).contains(LONG_ID), "{screen}");
    assert!(
        !screen.contains('\u{1b}'),
        "colour despite NO_COLOR: {screen:?}"
    );

    let screen = tmux.screen(
        "piped",
        &format!("env -u NO_COLOR TERM=xterm {saga} list | cat"),
    );
    assert!(strip(&screen).contains("failed-1"), "{screen}");
    assert!(!screen.contains('\u{1b}'), "colour into a pipe: {screen:?}");
}

/// `text` without SGR sequences.
fn strip(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `wait` that ended and did not complete, as its report.
fn ended(error: saga_core::WaitError) -> Result<saga_core::SagaReport, saga_core::WaitError> {
    match error {
        saga_core::WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}
