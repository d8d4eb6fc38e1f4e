//! `saga diagram`: a stored definition drawn as Mermaid or Graphviz DOT.

use saga_core::{SagaEngine, diagram};
use serde::Serialize;

use crate::CliError;
use crate::output::to_json;

fn is_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The start of a fingerprint, as `list` and the logs shorten it: at
/// least 8 hex digits.
fn is_fingerprint_prefix(text: &str) -> bool {
    (8..64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn no_definition(engine: &SagaEngine, wanted: &str) -> CliError {
    CliError::NoDefinition {
        wanted: wanted.to_owned(),
        store: engine.store().describe(),
    }
}

#[derive(Serialize)]
struct DiagramJson<'a> {
    saga: &'a str,
    fingerprint: &'a str,
    /// The version the definition declared (`SagaBuilder::version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    format: &'a str,
    diagram: &'a str,
}

pub(crate) async fn diagram_of(
    engine: &SagaEngine,
    wanted: &str,
    dot: bool,
    json: bool,
) -> Result<String, CliError> {
    let store = engine.store();
    let fingerprint = if is_fingerprint(wanted) {
        wanted.to_owned()
    } else if is_fingerprint_prefix(wanted) {
        // The definitions of the store's executions that start so.
        let wanted_lower = wanted.to_ascii_lowercase();
        let mut found: Vec<String> = engine
            .list(None)
            .await?
            .into_iter()
            .map(|r| r.fingerprint)
            .filter(|f| f.starts_with(&wanted_lower))
            .collect();
        found.sort();
        found.dedup();
        match found.len() {
            0 => return Err(no_definition(engine, wanted)),
            1 => found.remove(0),
            _ => {
                return Err(CliError::Usage(format!(
                    "`{wanted}` starts {} fingerprints ({}): give more of it",
                    found.len(),
                    found.join(", ")
                )));
            }
        }
    } else {
        // The newest execution of that saga names its newest definition.
        engine
            .list(None)
            .await?
            .into_iter()
            .rev()
            .find(|r| r.saga == wanted)
            .map(|r| r.fingerprint)
            .ok_or_else(|| no_definition(engine, wanted))?
    };
    let definition = store
        .definition(&fingerprint)
        .await?
        .ok_or_else(|| no_definition(engine, wanted))?;
    let steps = definition.steps()?;
    let text = if dot {
        diagram::dot(&definition.saga, &steps)
    } else {
        diagram::mermaid(&definition.saga, &steps)
    };
    if json {
        return Ok(to_json(&DiagramJson {
            saga: &definition.saga,
            fingerprint: &definition.fingerprint,
            version: definition.version()?,
            format: if dot { "dot" } else { "mermaid" },
            diagram: &text,
        }));
    }
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}
