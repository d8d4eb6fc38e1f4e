//! `saga diagram`: a stored definition drawn as Mermaid or Graphviz DOT.

use saga_core::{SagaEngine, diagram};
use serde::Serialize;

use crate::CliError;
use crate::output::to_json;

fn is_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
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
