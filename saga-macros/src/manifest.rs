//! Where `#[saga_task]` finds saga-core when its `crate = ..` does not say:
//! the package's `Cargo.toml` (as proc-macro-crate reads it), for a
//! renamed dependency (`sc = { package = "saga-core" }`) and to tell a
//! package that lacks saga-core (a facade's user) what to write. `saga!`
//! needs none of this: its `macro_rules!` wrapper passes `$crate`.

/// What the manifest says about saga-core.
#[derive(Debug, PartialEq, Eq)]
pub enum SagaCore {
    /// As `saga_core` (a dependency, or the package itself), or the
    /// manifest could not be read: `::saga_core`.
    Default,
    /// A dependency renamed to this name (`-` already `_`).
    Renamed(String),
    /// Not mentioned at all: reached, if at all, through another crate.
    Absent,
}

/// Reads `$CARGO_MANIFEST_DIR/Cargo.toml`.
pub fn saga_core() -> SagaCore {
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return SagaCore::Default;
    };
    match std::fs::read_to_string(std::path::Path::new(&dir).join("Cargo.toml")) {
        Ok(text) => find(&text),
        Err(_) => SagaCore::Default,
    }
}

/// A line scan, not a TOML parser: it recognises a renamed dependency
/// written on one line (`sc = { package = "saga-core", .. }`) or as a
/// table (`[dependencies.sc]` then `package = "saga-core"`), and calls a
/// manifest that never mentions `saga-core` or `saga_core` `Absent`.
/// Anything else is `Default`, which is what the macros did before.
pub fn find(manifest: &str) -> SagaCore {
    if !manifest.contains("saga-core") && !manifest.contains("saga_core") {
        return SagaCore::Absent;
    }
    let mut direct = false;
    let mut renamed = None;
    // The dependency a `[..dependencies.NAME]` header opened.
    let mut table: Option<String> = None;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']').trim();
            table = header
                .split_once("dependencies.")
                .map(|(_, name)| unquote(name).to_owned());
            if let Some(name) = &table {
                direct |= is_saga_core(name);
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (unquote(key.trim()), value.trim());
        match &table {
            Some(name) if key == "package" && is_saga_core(unquote(value)) => {
                renamed.get_or_insert_with(|| name.clone());
            }
            Some(_) => {}
            None if is_saga_core(key) => direct = true,
            None if renames_saga_core(value) => {
                renamed.get_or_insert_with(|| key.to_owned());
            }
            None => {}
        }
    }
    match renamed {
        Some(name) if !direct => SagaCore::Renamed(name.replace('-', "_")),
        _ => SagaCore::Default,
    }
}

fn unquote(text: &str) -> &str {
    text.trim().trim_matches('"').trim_matches('\'')
}

fn is_saga_core(name: &str) -> bool {
    name == "saga-core" || name == "saga_core"
}

/// `{ package = "saga-core", .. }`.
fn renames_saga_core(value: &str) -> bool {
    let Some(rest) = value.split("package").nth(1) else {
        return false;
    };
    let rest = rest.trim_start();
    rest.strip_prefix('=')
        .map(|rest| unquote(rest.split(',').next().unwrap_or("").trim_end_matches('}')))
        .is_some_and(is_saga_core)
}

#[cfg(test)]
mod tests {
    use super::{SagaCore, find};

    #[test]
    fn a_dependency_named_saga_core() {
        let toml = "[package]\nname = \"shop\"\n\n[dependencies]\nsaga-core = { version = \"0.2\", features = [\"postgres\"] }\n";
        assert_eq!(find(toml), SagaCore::Default);
        let toml = "[dependencies]\nsaga-core.workspace = true\n";
        assert_eq!(find(toml), SagaCore::Default);
        let toml = "[dependencies.saga-core]\nversion = \"0.2\"\n";
        assert_eq!(find(toml), SagaCore::Default);
    }

    #[test]
    fn saga_core_itself() {
        assert_eq!(find("[package]\nname = \"saga-core\"\n"), SagaCore::Default);
    }

    #[test]
    fn a_renamed_dependency() {
        let toml = "[dependencies]\nsc = { package = \"saga-core\", path = \"../saga-core\" }\n";
        assert_eq!(find(toml), SagaCore::Renamed("sc".into()));
        let toml = "[dev-dependencies]\nmy-saga = {path=\"x\",package='saga-core'}\n";
        assert_eq!(find(toml), SagaCore::Renamed("my_saga".into()));
        let toml =
            "[target.'cfg(unix)'.dependencies.sc]\npackage = \"saga-core\"\nversion = \"0.2\"\n";
        assert_eq!(find(toml), SagaCore::Renamed("sc".into()));
    }

    #[test]
    fn renamed_and_direct_keeps_the_direct_name() {
        let toml = "[dependencies]\nsaga-core = \"0.2\"\n[dev-dependencies]\nsc = { package = \"saga-core\" }\n";
        assert_eq!(find(toml), SagaCore::Default);
    }

    #[test]
    fn a_package_without_saga_core() {
        let toml =
            "[package]\nname = \"svc\"\n\n[dependencies]\nplatform = { path = \"../platform\" }\n";
        assert_eq!(find(toml), SagaCore::Absent);
    }

    #[test]
    fn a_mention_elsewhere_is_not_absent() {
        // Inherited from a workspace under another name: the text cannot
        // tell, so the default stands.
        let toml = "[package]\ndescription = \"built on saga-core\"\n[dependencies]\nsc.workspace = true\n";
        assert_eq!(find(toml), SagaCore::Default);
    }
}
