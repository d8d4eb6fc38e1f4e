//! The macros work whatever name saga-core has in the user's crate: through
//! a facade (a company crate or module re-exporting it), under a renamed
//! dependency (`sc = { package = "saga-core" }`), and with the name
//! `saga_core` nowhere in scope. `saga!` finds its crate by itself;
//! `#[saga_task]` by itself under a renamed dependency, and through a
//! facade with `crate = path::to::saga_core`, which its error says to write.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A module facade: the service below names saga-core only through it.
mod platform {
    pub use saga_core as core;
}

mod service {
    use crate::platform::core::{Saga, StepError, saga, saga_task};

    #[derive(Default)]
    pub struct Order {
        pub log: Vec<String>,
    }

    #[saga_task(crate = crate::platform::core, undo = refund)]
    fn charge(order: &mut Order) -> Result<u64, StepError> {
        order.log.push("charge".into());
        Ok(7)
    }

    #[saga_task(crate = crate::platform::core)]
    fn refund(order: &mut Order, payment: Option<&u64>) -> Result<(), StepError> {
        order.log.push(format!("refund {payment:?}"));
        Ok(())
    }

    #[saga_task(crate = crate::platform::core)]
    fn ship(order: &mut Order) -> Result<(), StepError> {
        order.log.push("ship".into());
        Err("no courier".into())
    }

    pub fn order() -> Saga<Order> {
        saga! { name: "order", context: Order, step charge; step ship, retry 1; }
    }
}

#[test]
fn a_facade_module_reaches_the_macros() {
    let mut order = service::Order::default();
    let err = service::order().run_blocking(&mut order).unwrap_err();
    assert_eq!(order.log, ["charge", "ship", "refund Some(7)"]);
    assert_eq!(
        err.to_string(),
        "saga `order` failed at step `ship` and was rolled back (compensated: charge)"
    );
}

const STEPS: &str = r#"
#[derive(Default)]
pub struct Order { pub charged: bool }

ATTR
fn charge(o: &mut Order) -> Result<u64, StepError> { o.charged = true; Ok(1) }

fn main() {
    let s = saga! { name: "order", context: Order, step charge; };
    let mut o = Order::default();
    s.run_blocking(&mut o).unwrap();
    assert!(o.charged);
}
"#;

/// A workspace of three crates that do not call saga-core `saga_core`:
/// `renamed` (a renamed dependency, plain `#[saga_task]`), `svc` (through
/// the `platform` facade, with `crate = ..`) and `svc-forgot` (the same
/// without it).
fn write_workspace(root: &Path) {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("saga-core");
    let core = core.display();
    let files = [
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"platform\", \"svc\", \"svc-forgot\", \"renamed\"]\nresolver = \"2\"\n"
                .to_owned(),
        ),
        (
            "platform/Cargo.toml",
            format!(
                "[package]\nname = \"platform\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nsc = {{ package = \"saga-core\", path = \"{core}\", default-features = false }}\n"
            ),
        ),
        (
            "platform/src/lib.rs",
            "pub use sc as saga;\npub use sc::{saga, saga_task, StepError};\n".to_owned(),
        ),
        (
            "svc/Cargo.toml",
            "[package]\nname = \"svc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nplatform = { path = \"../platform\" }\n"
                .to_owned(),
        ),
        (
            "svc/src/main.rs",
            format!(
                "use platform::{{saga, saga_task, StepError}};\n{}",
                STEPS.replace("ATTR", "#[saga_task(crate = platform::saga)]")
            ),
        ),
        (
            "svc-forgot/Cargo.toml",
            "[package]\nname = \"svc-forgot\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nplatform = { path = \"../platform\" }\n"
                .to_owned(),
        ),
        (
            "svc-forgot/src/main.rs",
            format!(
                "use platform::{{saga, saga_task, StepError}};\n{}",
                STEPS.replace("ATTR", "#[saga_task]")
            ),
        ),
        (
            "renamed/Cargo.toml",
            format!(
                "[package]\nname = \"renamed\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nsc = {{ package = \"saga-core\", path = \"{core}\", default-features = false }}\n"
            ),
        ),
        (
            "renamed/src/main.rs",
            format!(
                "use sc::{{saga, saga_task, StepError}};\n{}",
                STEPS.replace("ATTR", "#[saga_task]")
            ),
        ),
    ];
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    // The workspace's lock file: the same versions, all in the local cache.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
        root.join("Cargo.lock"),
    )
    .unwrap();
}

/// `cargo check` of `package` in `root`, with a deadline; (success, stderr).
fn check(root: &Path, package: &str) -> (bool, String) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args([
            "check",
            "--offline",
            "--quiet",
            "--message-format=short",
            "-p",
            package,
        ])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.success(), stderr);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("`cargo check -p {package}` took more than 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn workspace() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("macro-paths");
    write_workspace(&root);
    root
}

#[test]
fn crates_that_do_not_call_saga_core_saga_core() {
    let root = workspace();
    for package in ["renamed", "svc"] {
        let (ok, stderr) = check(&root, package);
        assert!(ok, "`{package}` does not compile:\n{stderr}");
    }
    let (ok, stderr) = check(&root, "svc-forgot");
    assert!(!ok, "`svc-forgot` compiles");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    // The attribute's error, then `saga!`'s about the function it left
    // without its twin.
    assert_eq!(
        errors,
        [
            "svc-forgot/src/main.rs:6:1: error: `saga_core` is not a dependency of this package: if it is reached through another crate or under another name, say where with `#[saga_task(crate = path::to::saga_core)]`",
            "svc-forgot/src/main.rs:10:57: error[E0277]: a plain function cannot be a saga step or compensation: add `#[saga_task]` above its `fn`: this function has no `#[saga_task]`",
            "error: could not compile `svc-forgot` (bin \"svc-forgot\") due to 2 previous errors",
        ],
        "{stderr}"
    );
}
