//! A definition's shape and fingerprint: its canonical description, the
//! SHA-256 that names it, and the stored shape read back.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::saga::{Saga, StepShape};
use crate::step::StepKind;
use crate::store::{DefinitionRecord, StoreError};

pub(super) fn kind_from_label(label: &str) -> StepKind {
    match label {
        "compensable" => StepKind::Compensable,
        "pivot" => StepKind::Pivot,
        "retriable" => StepKind::Retriable,
        _ => StepKind::NoUndo,
    }
}

/// A definition's canonical description: what its fingerprint hashes.
#[derive(Serialize, Deserialize)]
pub(super) struct Shape {
    /// The description's own format, so it can evolve without colliding.
    pub(super) format: u32,
    pub(super) saga: String,
    /// The declared version ([`SagaBuilder::version`](crate::SagaBuilder::version)):
    /// absent without one, so that such a saga keeps its fingerprint.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(super) version: Option<String>,
    pub(super) steps: Vec<ShapeStep>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ShapeStep {
    pub(super) name: String,
    pub(super) kind: String,
    /// The parallel group it is a branch of.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(super) group: Option<usize>,
}

/// The canonical description of a definition (JSON: name, declared
/// version, steps in order with their kinds and groups), its text and its fingerprint: SHA-256 of
/// that text, hex. Stable across builds, platforms and compilers; retry policies,
/// timeouts and metadata are not part of it (changing them does not change
/// what a log means).
pub(super) fn describe<C, D>(saga: &Saga<C, D>) -> (Shape, String, String) {
    let shape = Shape {
        format: 1,
        saga: saga.name().to_owned(),
        version: saga.version().map(str::to_owned),
        steps: saga
            .shape()
            .into_iter()
            .map(|s| ShapeStep {
                name: s.name,
                kind: s.kind.label().to_owned(),
                group: s.group,
            })
            .collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    let text = serde_json::to_string(&shape).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    (shape, text, hex)
}

impl DefinitionRecord {
    /// The version the definition declared
    /// ([`SagaBuilder::version`](crate::SagaBuilder::version)), if any.
    ///
    /// # Errors
    /// [`StoreError::BadRecord`] if the stored shape does not parse.
    pub fn version(&self) -> Result<Option<String>, StoreError> {
        Ok(self.parsed()?.version)
    }

    fn parsed(&self) -> Result<Shape, StoreError> {
        serde_json::from_str(&self.shape).map_err(|e| StoreError::BadRecord {
            store: "the store".to_owned(),
            what: format!("the definition {}", self.fingerprint),
            detail: e.to_string(),
        })
    }

    /// The steps of the stored shape, in order, as
    /// [`diagram::mermaid`](crate::diagram::mermaid) and tools take them.
    /// The shape keeps names, kinds and parallel groups only: metadata is
    /// empty and `is_async` false.
    ///
    /// # Errors
    /// [`StoreError::BadRecord`] if the stored shape does not parse.
    pub fn steps(&self) -> Result<Vec<StepShape>, StoreError> {
        let shape = self.parsed()?;
        Ok(shape
            .steps
            .into_iter()
            .map(|s| StepShape {
                kind: kind_from_label(&s.kind),
                name: s.name,
                is_async: false,
                metadata: crate::step::Metadata::new(),
                group: s.group,
            })
            .collect())
    }
}

impl<C, D> Saga<C, D> {
    /// The definition's fingerprint: SHA-256 (hex) of its canonical
    /// description (name, declared [version](crate::SagaBuilder::version), steps
    /// in order, their kinds and parallel groups). A durable execution
    /// records it; recovery runs an execution only under a registered
    /// definition with the same fingerprint. The context's type and the
    /// steps' code are not part of it: declare a new version when they
    /// change what a log means.
    pub fn fingerprint(&self) -> String {
        describe(self).2
    }
}
