//! Diagrams of a definition: steps in order, compensation edges chained in
//! rollback order, the pivot and the steps after it marked.
//!
//! The tests check the nodes and edges (each a line), not the layout of
//! the text around them.

mod support;

use saga_core::Saga;
use support::steps::*;

fn order() -> Saga<Rec> {
    Saga::builder("order")
        .step(compensable("reserve"))
        .step(plain("validate"))
        .step(compensable("hold"))
        .pivot(plain("charge"))
        .step(plain("ship"))
        .build()
        .unwrap()
}

/// Asserts that each of `expected` is a line of `diagram`.
fn assert_lines(diagram: &str, expected: &[&str]) {
    let lines: Vec<&str> = diagram.lines().map(str::trim).collect();
    for line in expected {
        assert!(lines.contains(line), "missing line `{line}` in:\n{diagram}");
    }
}

#[test]
fn mermaid_shows_steps_compensations_and_the_pivot() {
    let chart = order().to_mermaid();
    assert!(chart.contains("title: \"saga order\""), "{chart}");
    assert_lines(
        &chart,
        &[
            "flowchart TD",
            // Steps: compensable in boxes, no-undo rounded, the pivot a
            // hexagon, the steps after it marked retriable.
            r#"s0["reserve"]"#,
            r#"s1("validate")"#,
            r#"s2["hold"]"#,
            r#"s3{{"charge (pivot)"}}"#,
            r#"s4["ship (retriable)"]"#,
            // In order.
            "start --> s0",
            "s0 --> s1",
            "s1 --> s2",
            "s2 --> s3",
            "s3 --> s4",
            "s4 --> done",
            // Compensations, chained in rollback order.
            r#"s0 -. on rollback .-> u0["undo reserve"]"#,
            r#"s2 -. on rollback .-> u2["undo hold"]"#,
            "u2 -.-> u0",
        ],
    );
    // No undo for the steps that have none.
    for absent in ["u1", "u3", "u4"] {
        assert!(!chart.contains(absent), "{absent} in:\n{chart}");
    }
}

#[test]
fn dot_shows_steps_compensations_and_the_pivot() {
    let dot = order().to_dot();
    assert!(dot.starts_with("digraph \"order\" {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    assert_lines(
        &dot,
        &[
            r#"s0 [shape=box, label="reserve"];"#,
            r#"s1 [shape=box, style=rounded, label="validate"];"#,
            r#"s2 [shape=box, label="hold"];"#,
            r#"s3 [shape=hexagon, label="charge (pivot)"];"#,
            r#"s4 [shape=box, label="ship (retriable)"];"#,
            "start -> s0;",
            "s0 -> s1;",
            "s1 -> s2;",
            "s2 -> s3;",
            "s3 -> s4;",
            "s4 -> done;",
            r#"u0 [shape=box, style=dashed, label="undo reserve"];"#,
            r#"s0 -> u0 [style=dashed, label="on rollback"];"#,
            r#"u2 [shape=box, style=dashed, label="undo hold"];"#,
            r#"s2 -> u2 [style=dashed, label="on rollback"];"#,
            "u2 -> u0 [style=dashed];",
        ],
    );
    for absent in ["u1", "u3", "u4"] {
        assert!(!dot.contains(absent), "{absent} in:\n{dot}");
    }
}

#[test]
fn quotes_in_names_are_escaped() {
    let saga = Saga::builder(r#"say "hi""#)
        .step(compensable(r#"a "quoted" \ step"#))
        .build()
        .unwrap();
    let mermaid = saga.to_mermaid();
    assert!(
        mermaid.contains(r#"title: "saga say #quot;hi#quot;""#),
        "{mermaid}"
    );
    assert_lines(&mermaid, &[r#"s0["a #quot;quoted#quot; \ step"]"#]);
    let dot = saga.to_dot();
    assert!(dot.starts_with(r#"digraph "say \"hi\"" {"#), "{dot}");
    assert!(dot.contains(r#"label="a \"quoted\" \\ step""#), "{dot}");
}

/// Control and bidirectional formatting characters in stored names are
/// written as `\u{..}`, as `saga list` and `show` write them: an ESC or
/// OSC sequence does not reach the terminal that prints the diagram, and
/// a newline does not end the Mermaid front matter or a node's line.
#[test]
fn control_characters_in_names_are_escaped() {
    let saga = Saga::builder("esc\u{1b}]0;PWNED\u{7}\ntitle: forged")
        .step(compensable("a\nb\u{202e}c"))
        .build()
        .unwrap();
    let mermaid = saga.to_mermaid();
    let dot = saga.to_dot();
    for diagram in [&mermaid, &dot] {
        assert!(
            !diagram
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{diagram:?}"
        );
    }
    // The front matter is YAML: a backslash in its double-quoted title is
    // doubled, so the title reads `\u{1b}` rather than being invalid.
    assert!(
        mermaid.starts_with(
            "---\ntitle: \"saga esc\\\\u{1b}]0;PWNED\\\\u{7}\\\\u{a}title: forged\"\n---\n"
        ),
        "{mermaid}"
    );
    assert_lines(
        &mermaid,
        &[
            r#"s0["a\u{a}b\u{202e}c"]"#,
            r#"s0 -. on rollback .-> u0["undo a\u{a}b\u{202e}c"]"#,
        ],
    );
    assert!(
        dot.starts_with(r#"digraph "esc\\u{1b}]0;PWNED\\u{7}\\u{a}title: forged" {"#),
        "{dot}"
    );
    assert!(dot.contains(r#"label="a\\u{a}b\\u{202e}c""#), "{dot}");
    assert!(dot.contains(r#"label="undo a\\u{a}b\\u{202e}c""#), "{dot}");
}

#[test]
fn a_saga_without_compensations_has_no_undo_nodes() {
    let saga = Saga::builder("reads")
        .step(plain("a"))
        .step(plain("b"))
        .build()
        .unwrap();
    assert!(!saga.to_mermaid().contains("undo"));
    assert!(!saga.to_dot().contains("undo"));
    assert_lines(
        &saga.to_mermaid(),
        &["start --> s0", "s0 --> s1", "s1 --> done"],
    );
}
