//! Where `#[saga_task]` finds saga-core when its `crate = ..` does not say:
//! the package's `Cargo.toml` (as proc-macro-crate reads it), for a
//! renamed dependency (`sc = { package = "saga-core" }`, also one
//! inherited from the workspace) and to tell a package that lacks
//! saga-core (a facade's user) what to write. `saga!` needs none of this:
//! its `macro_rules!` wrapper passes `$crate`.

use std::path::Path;

use toml::{Table, Value};

/// What the manifest says about saga-core.
#[derive(Debug, PartialEq, Eq)]
pub enum SagaCore {
    /// As `saga_core` (a dependency, or the package itself), or the
    /// manifest could not be read: `::saga_core`.
    Default,
    /// A dependency renamed to this name (`-` already `_`).
    Renamed(String),
    /// Not a dependency: reached, if at all, through another crate.
    Absent,
}

/// Reads `$CARGO_MANIFEST_DIR/Cargo.toml` (and, for a dependency it
/// inherits, its workspace's).
pub fn saga_core() -> SagaCore {
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return SagaCore::Default;
    };
    let dir = Path::new(&dir);
    match std::fs::read_to_string(dir.join("Cargo.toml")) {
        Ok(text) => find(&text, || workspace_manifest(dir)),
        Err(_) => SagaCore::Default,
    }
}

/// The manifest of the workspace `dir`'s package belongs to: the nearest
/// one above it (or its own) with a `[workspace]` table.
fn workspace_manifest(dir: &Path) -> Option<Table> {
    dir.ancestors().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        let table = text.parse::<Table>().ok()?;
        table.contains_key("workspace").then_some(table)
    })
}

/// What `manifest` says; `workspace` gives the workspace's manifest for a
/// dependency inherited from it (`sc = { workspace = true }`). A manifest
/// that does not parse is `Default`, what the macros did before.
pub fn find(manifest: &str, workspace: impl FnOnce() -> Option<Table>) -> SagaCore {
    let Ok(manifest) = manifest.parse::<Table>() else {
        return SagaCore::Default;
    };
    let name = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str);
    if name.is_some_and(is_saga_core) {
        return SagaCore::Default;
    }
    let mut workspace = Some(workspace);
    let mut inherited: Option<Option<Table>> = None;
    let mut package_of = |key: &str, value: &Value| -> Option<String> {
        let Some(spec) = value.as_table() else {
            return Some(key.to_owned());
        };
        if let Some(package) = spec.get("package").and_then(Value::as_str) {
            return Some(package.to_owned());
        }
        if spec.get("workspace").and_then(Value::as_bool) == Some(true) {
            let root = inherited.get_or_insert_with(|| workspace.take().and_then(|w| w()));
            let package = root
                .as_ref()
                .and_then(|root| root.get("workspace"))
                .and_then(|w| w.get("dependencies"))
                .and_then(|deps| deps.get(key))
                .and_then(|dep| dep.get("package"))
                .and_then(Value::as_str);
            return Some(package.unwrap_or(key).to_owned());
        }
        Some(key.to_owned())
    };
    // The build of the library sees only `[dependencies]` (and the
    // target-specific ones); its tests and examples see the
    // dev-dependencies too: a normal dependency decides first.
    for kinds in [
        &["dependencies"][..],
        &["dev-dependencies", "dev_dependencies"],
    ] {
        let mut direct = false;
        let mut renamed = None;
        for deps in dependency_tables(&manifest, kinds) {
            for (key, value) in deps {
                if package_of(key, value).is_some_and(|p| is_saga_core(&p)) {
                    if is_saga_core(key) {
                        direct = true;
                    } else {
                        renamed.get_or_insert_with(|| key.replace('-', "_"));
                    }
                }
            }
        }
        if direct {
            return SagaCore::Default;
        }
        if let Some(name) = renamed {
            return SagaCore::Renamed(name);
        }
    }
    SagaCore::Absent
}

/// The tables of `kinds` (`dependencies`, ...) at the top of `manifest`
/// and under each `[target.'..']`.
fn dependency_tables<'m>(manifest: &'m Table, kinds: &'m [&'m str]) -> Vec<&'m Table> {
    let targets = manifest
        .get("target")
        .and_then(Value::as_table)
        .into_iter()
        .flat_map(|targets| targets.values().filter_map(Value::as_table));
    std::iter::once(manifest)
        .chain(targets)
        .flat_map(|table| kinds.iter().filter_map(|kind| table.get(*kind)?.as_table()))
        .collect()
}

fn is_saga_core(name: &str) -> bool {
    name == "saga-core" || name == "saga_core"
}

#[cfg(test)]
mod tests {
    use super::{SagaCore, Table, find};

    fn alone(manifest: &str) -> SagaCore {
        find(manifest, || None)
    }

    #[test]
    fn a_dependency_named_saga_core() {
        let toml = "[package]\nname = \"shop\"\n\n[dependencies]\nsaga-core = { version = \"0.2\", features = [\"postgres\"] }\n";
        assert_eq!(alone(toml), SagaCore::Default);
        let toml = "[dependencies]\nsaga-core.workspace = true\n";
        assert_eq!(alone(toml), SagaCore::Default);
        let toml = "[dependencies.saga-core]\nversion = \"0.2\"\n";
        assert_eq!(alone(toml), SagaCore::Default);
    }

    #[test]
    fn saga_core_itself() {
        assert_eq!(
            alone("[package]\nname = \"saga-core\"\n"),
            SagaCore::Default
        );
    }

    #[test]
    fn a_renamed_dependency() {
        let toml = "[dependencies]\nsc = { package = \"saga-core\", path = \"../saga-core\" }\n";
        assert_eq!(alone(toml), SagaCore::Renamed("sc".into()));
        let toml = "[dev-dependencies]\nmy-saga = {path=\"x\",package='saga-core'}\n";
        assert_eq!(alone(toml), SagaCore::Renamed("my_saga".into()));
        let toml =
            "[target.'cfg(unix)'.dependencies.sc]\npackage = \"saga-core\"\nversion = \"0.2\"\n";
        assert_eq!(alone(toml), SagaCore::Renamed("sc".into()));
    }

    /// Manifests a line scan misread (a fresh reader's review).
    #[test]
    fn renames_written_every_valid_way() {
        for toml in [
            // "package" in the path before the key.
            "[dependencies]\nsc = { path = \"../packages/saga-core\", package = \"saga-core\" }\n",
            // Dotted keys.
            "[dependencies]\nsc.package = \"saga-core\"\nsc.path = \"../saga-core\"\n",
            // A `#` inside a string.
            "[dependencies]\nsc = { git = \"https://example.com/x#y\", branch = \"fix#1\", package = \"saga-core\" }\n",
            // A patch of saga-core is not a dependency.
            "[dependencies]\nsc = { package = \"saga-core\", version = \"0.2\" }\n[patch.crates-io]\nsaga-core = { path = \"../saga-core\" }\n",
            // A feature named like it is not a dependency either.
            "[dependencies]\nsc = { package = \"saga-core\", optional = true }\n[features]\nsaga-core = [\"dep:sc\"]\n",
        ] {
            assert_eq!(alone(toml), SagaCore::Renamed("sc".into()), "{toml}");
        }
    }

    #[test]
    fn a_rename_inherited_from_the_workspace() {
        let root = "[workspace]\nmembers = [\"svc\"]\n[workspace.dependencies]\nsc = { package = \"saga-core\", version = \"0.2\" }\n"
            .parse::<Table>()
            .unwrap();
        let toml = "[package]\nname = \"svc\"\n[dependencies]\nsc = { workspace = true }\n";
        assert_eq!(find(toml, || Some(root)), SagaCore::Renamed("sc".into()));
    }

    #[test]
    fn a_normal_dependency_decides_before_a_dev_dependency() {
        let toml = "[dependencies]\nsaga-core = \"0.2\"\n[dev-dependencies]\nsc = { package = \"saga-core\" }\n";
        assert_eq!(alone(toml), SagaCore::Default);
        let toml = "[dependencies]\nsc = { package = \"saga-core\" }\n[dev-dependencies]\nsaga-core = \"0.2\"\n";
        assert_eq!(alone(toml), SagaCore::Renamed("sc".into()));
    }

    #[test]
    fn a_package_without_saga_core() {
        let toml =
            "[package]\nname = \"svc\"\n\n[dependencies]\nplatform = { path = \"../platform\" }\n";
        assert_eq!(alone(toml), SagaCore::Absent);
        // A mention that is no dependency (a description) is absent too.
        let toml =
            "[package]\ndescription = \"built on saga-core\"\n[dependencies]\nplatform = \"1\"\n";
        assert_eq!(alone(toml), SagaCore::Absent);
    }

    #[test]
    fn a_manifest_that_does_not_parse_keeps_the_default() {
        assert_eq!(alone("[dependencies\nsc = "), SagaCore::Default);
    }
}
