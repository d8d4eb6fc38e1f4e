//! Diagrams of a definition: Mermaid and Graphviz DOT.
//!
//! Names are user text: their control and bidirectional formatting
//! characters are written as `\u{..}` ([`crate::escape`]), so a diagram
//! printed to a terminal cannot act on it, and a newline in a name cannot
//! end a node's line or the Mermaid front matter.

use std::fmt::Write;

use crate::escape::Escaped;
use crate::saga::{Saga, StepShape};
use crate::step::StepKind;

impl<C, D> Saga<C, D> {
    /// The definition as a Mermaid flowchart: steps in order (the pivot as
    /// a hexagon, steps with nothing to undo in rounded boxes), parallel
    /// groups between a `fork` and a `join`, and each compensation as a
    /// dashed edge to an `undo` node, the undo nodes chained in rollback
    /// order. Control characters in names are written as `\u{..}`.
    ///
    /// ```
    /// use saga_core::{Saga, Step, StepError, StepInfo};
    /// let saga: Saga<()> = Saga::builder("demo")
    ///     .step(Step::new("a", |_: &mut (), _: &StepInfo<'_>| Ok::<_, StepError>(()))
    ///         .undo(|_: &mut (), _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(())))
    ///     .pivot(Step::new("b", |_: &mut (), _: &StepInfo<'_>| Ok::<_, StepError>(())))
    ///     .build().unwrap();
    /// let chart = saga.to_mermaid();
    /// assert!(chart.contains(r#"s1{{"b (pivot)"}}"#));
    /// assert!(chart.contains(r#"s0 -. on rollback .-> u0["undo a"]"#));
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

/// The steps as nodes of execution: runs of branches of one group
/// together, other steps alone. Yields (group number, step indexes).
fn nodes(steps: &[StepShape]) -> Vec<(Option<usize>, Vec<usize>)> {
    let mut nodes: Vec<(Option<usize>, Vec<usize>)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match (nodes.last_mut(), step.group) {
            (Some((Some(g), members)), Some(group)) if *g == group => members.push(i),
            _ => nodes.push((step.group, vec![i])),
        }
    }
    nodes
}

/// Writes a diagram through `Syntax`: forward edges through forks and
/// joins, then compensation edges layer by layer in rollback order.
fn render(steps: &[StepShape], syntax: &dyn Syntax, out: &mut String) {
    let mut previous = vec!["start".to_owned()];
    for (group, members) in nodes(steps) {
        let heads: Vec<String> = members.iter().map(|&i| format!("s{i}")).collect();
        for &i in &members {
            syntax.step(out, i, &steps[i]);
        }
        match group {
            Some(g) => {
                syntax.junction(out, &format!("fork{g}"), "fork");
                syntax.junction(out, &format!("join{g}"), "join");
                for p in &previous {
                    syntax.edge(out, p, &format!("fork{g}"));
                }
                for head in &heads {
                    syntax.edge(out, &format!("fork{g}"), head);
                    syntax.edge(out, head, &format!("join{g}"));
                }
                previous = vec![format!("join{g}")];
            }
            None => {
                for p in &previous {
                    syntax.edge(out, p, &heads[0]);
                }
                previous = heads;
            }
        }
    }
    for p in &previous {
        syntax.edge(out, p, "done");
    }
    let mut layer: Vec<usize> = Vec::new();
    for (_, members) in nodes(steps) {
        let undone: Vec<usize> = members
            .into_iter()
            .filter(|&i| steps[i].kind == StepKind::Compensable)
            .collect();
        if undone.is_empty() {
            continue;
        }
        for &i in &undone {
            syntax.undo(out, i, &steps[i].name);
            for &earlier in &layer {
                syntax.rollback_edge(out, i, earlier);
            }
        }
        layer = undone;
    }
}

trait Syntax {
    fn step(&self, out: &mut String, i: usize, step: &StepShape);
    fn junction(&self, out: &mut String, id: &str, text: &str);
    fn edge(&self, out: &mut String, from: &str, to: &str);
    fn undo(&self, out: &mut String, i: usize, name: &str);
    fn rollback_edge(&self, out: &mut String, from: usize, to: usize);
}

struct Mermaid;

/// A name for a Mermaid label: control and bidirectional formatting
/// characters as `\u{..}` (a newline would end the node's line, an ESC
/// sequence would reach the terminal that prints the diagram), `"` as
/// Mermaid's entity.
fn mermaid_text(s: &str) -> String {
    Escaped(s).to_string().replace('"', "#quot;")
}

/// A name for the front matter's `title: "..."`, a YAML double-quoted
/// string, in which a backslash starts an escape: doubled, it reads as
/// itself.
fn mermaid_title(s: &str) -> String {
    mermaid_text(s).replace('\\', "\\\\")
}

impl Syntax for Mermaid {
    fn step(&self, out: &mut String, i: usize, step: &StepShape) {
        let text = mermaid_text(&label(step));
        let _ = match step.kind {
            StepKind::Pivot => writeln!(out, "    s{i}{{{{\"{text}\"}}}}"),
            StepKind::NoUndo => writeln!(out, "    s{i}(\"{text}\")"),
            _ => writeln!(out, "    s{i}[\"{text}\"]"),
        };
    }

    fn junction(&self, out: &mut String, id: &str, text: &str) {
        let _ = writeln!(out, "    {id}{{\"{text}\"}}");
    }

    fn edge(&self, out: &mut String, from: &str, to: &str) {
        let _ = writeln!(out, "    {from} --> {to}");
    }

    fn undo(&self, out: &mut String, i: usize, name: &str) {
        let _ = writeln!(
            out,
            "    s{i} -. on rollback .-> u{i}[\"undo {}\"]",
            mermaid_text(name)
        );
    }

    fn rollback_edge(&self, out: &mut String, from: usize, to: usize) {
        let _ = writeln!(out, "    u{from} -.-> u{to}");
    }
}

struct Dot;

/// A name for a DOT string: control and bidirectional formatting
/// characters as `\u{..}`, then `\` and `"` escaped.
fn dot_text(s: &str) -> String {
    Escaped(s)
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

impl Syntax for Dot {
    fn step(&self, out: &mut String, i: usize, step: &StepShape) {
        let shape = match step.kind {
            StepKind::Pivot => "hexagon",
            StepKind::NoUndo => "box, style=rounded",
            _ => "box",
        };
        let _ = writeln!(
            out,
            "    s{i} [shape={shape}, label=\"{}\"];",
            dot_text(&label(step))
        );
    }

    fn junction(&self, out: &mut String, id: &str, text: &str) {
        let _ = writeln!(out, "    {id} [shape=diamond, label=\"{text}\"];");
    }

    fn edge(&self, out: &mut String, from: &str, to: &str) {
        let _ = writeln!(out, "    {from} -> {to};");
    }

    fn undo(&self, out: &mut String, i: usize, name: &str) {
        let _ = writeln!(
            out,
            "    u{i} [shape=box, style=dashed, label=\"undo {}\"];\n    s{i} -> u{i} [style=dashed, label=\"on rollback\"];",
            dot_text(name)
        );
    }

    fn rollback_edge(&self, out: &mut String, from: usize, to: usize) {
        let _ = writeln!(out, "    u{from} -> u{to} [style=dashed];");
    }
}

/// A Mermaid flowchart of a saga's steps.
pub fn mermaid(name: &str, steps: &[StepShape]) -> String {
    let mut out = format!(
        "---\ntitle: \"saga {}\"\n---\nflowchart TD\n    start((start))\n    done((done))\n",
        mermaid_title(name)
    );
    render(steps, &Mermaid, &mut out);
    out
}

/// A Graphviz DOT digraph of a saga's steps.
pub fn dot(name: &str, steps: &[StepShape]) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n    rankdir=TB;\n    start [shape=circle, label=\"start\"];\n    done [shape=doublecircle, label=\"done\"];\n",
        dot_text(name)
    );
    render(steps, &Dot, &mut out);
    out.push_str("}\n");
    out
}
