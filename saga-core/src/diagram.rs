//! Diagrams of a definition: Mermaid and Graphviz DOT.

use std::fmt::Write;

use crate::saga::{Saga, StepShape};
use crate::step::StepKind;

impl<C> Saga<C> {
    /// The definition as a Mermaid flowchart: steps in order (the pivot as
    /// a hexagon, steps with nothing to undo in rounded boxes), and each
    /// compensation as a dashed edge to an `undo` node, the undo nodes
    /// chained in rollback order.
    ///
    /// ```
    /// use saga_core::{Saga, Step, StepError, StepInfo};
    /// let saga: Saga<()> = Saga::builder("demo")
    ///     .step(Step::new("a", |_: &mut (), _: &StepInfo<'_>| Ok::<_, StepError>(()))
    ///         .compensate(|_: &mut (), _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(())))
    ///     .pivot(Step::new("b", |_: &mut (), _: &StepInfo<'_>| Ok::<_, StepError>(())))
    ///     .build().unwrap();
    /// let chart = saga.to_mermaid();
    /// assert!(chart.contains(r#"s1{{"b (pivot)"}}"#));
    /// assert!(chart.contains(r#"s0 -. on failure .-> u0["undo a"]"#));
    /// ```
    pub fn to_mermaid(&self) -> String {
        mermaid(self.name(), &self.shape())
    }

    /// The definition as a Graphviz DOT digraph, with the same content as
    /// [`to_mermaid`](Self::to_mermaid).
    pub fn to_dot(&self) -> String {
        dot(self.name(), &self.shape())
    }
}

fn label(step: &StepShape) -> String {
    match step.kind {
        StepKind::Pivot => format!("{} (pivot)", step.name),
        StepKind::Retriable => format!("{} (retriable)", step.name),
        _ => step.name.clone(),
    }
}

/// A Mermaid flowchart of a saga's steps.
pub fn mermaid(name: &str, steps: &[StepShape]) -> String {
    let q = |s: &str| s.replace('"', "#quot;");
    let mut out = String::new();
    let _ = writeln!(out, "---\ntitle: \"saga {}\"\n---\nflowchart TD", q(name));
    let _ = writeln!(out, "    start((start))");
    let mut previous = "start".to_owned();
    for (i, step) in steps.iter().enumerate() {
        let text = q(&label(step));
        let node = match step.kind {
            StepKind::Pivot => format!("s{i}{{{{\"{text}\"}}}}"),
            StepKind::NoUndo => format!("s{i}(\"{text}\")"),
            _ => format!("s{i}[\"{text}\"]"),
        };
        let _ = writeln!(out, "    {previous} --> {node}");
        previous = format!("s{i}");
    }
    let _ = writeln!(out, "    {previous} --> done((done))");
    let mut undo_chain: Option<usize> = None;
    for (i, step) in steps.iter().enumerate() {
        if step.kind == StepKind::Compensable {
            let _ = writeln!(
                out,
                "    s{i} -. on failure .-> u{i}[\"undo {}\"]",
                q(&step.name)
            );
            if let Some(prev) = undo_chain {
                let _ = writeln!(out, "    u{i} -.-> u{prev}");
            }
            undo_chain = Some(i);
        }
    }
    out
}

/// A Graphviz DOT digraph of a saga's steps.
pub fn dot(name: &str, steps: &[StepShape]) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{\n    rankdir=TB;", q(name));
    let _ = writeln!(out, "    start [shape=circle, label=\"start\"];");
    let mut previous = "start".to_owned();
    for (i, step) in steps.iter().enumerate() {
        let shape = match step.kind {
            StepKind::Pivot => "hexagon",
            StepKind::NoUndo => "box, style=rounded",
            _ => "box",
        };
        let _ = writeln!(
            out,
            "    s{i} [shape={shape}, label=\"{}\"];",
            q(&label(step))
        );
        let _ = writeln!(out, "    {previous} -> s{i};");
        previous = format!("s{i}");
    }
    let _ = writeln!(
        out,
        "    done [shape=doublecircle, label=\"done\"];\n    {previous} -> done;"
    );
    let mut undo_chain: Option<usize> = None;
    for (i, step) in steps.iter().enumerate() {
        if step.kind == StepKind::Compensable {
            let _ = writeln!(
                out,
                "    u{i} [shape=box, style=dashed, label=\"undo {}\"];",
                q(&step.name)
            );
            let _ = writeln!(
                out,
                "    s{i} -> u{i} [style=dashed, label=\"on failure\"];"
            );
            if let Some(prev) = undo_chain {
                let _ = writeln!(out, "    u{i} -> u{prev} [style=dashed];");
            }
            undo_chain = Some(i);
        }
    }
    out.push_str("}\n");
    out
}
