//! Diagrams of a definition: steps in order, compensation edges chained in
//! rollback order, the pivot and the steps after it marked.

mod common;

use common::*;
use saga_core::Saga;

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

#[test]
fn mermaid_shows_steps_compensations_and_the_pivot() {
    assert_eq!(
        order().to_mermaid(),
        r#"---
title: "saga order"
---
flowchart TD
    start((start))
    start --> s0["reserve"]
    s0 --> s1("validate")
    s1 --> s2["hold"]
    s2 --> s3{{"charge (pivot)"}}
    s3 --> s4["ship (retriable)"]
    s4 --> done((done))
    s0 -. on failure .-> u0["undo reserve"]
    s2 -. on failure .-> u2["undo hold"]
    u2 -.-> u0
"#
    );
}

#[test]
fn dot_shows_steps_compensations_and_the_pivot() {
    assert_eq!(
        order().to_dot(),
        r#"digraph "order" {
    rankdir=TB;
    start [shape=circle, label="start"];
    s0 [shape=box, label="reserve"];
    start -> s0;
    s1 [shape=box, style=rounded, label="validate"];
    s0 -> s1;
    s2 [shape=box, label="hold"];
    s1 -> s2;
    s3 [shape=hexagon, label="charge (pivot)"];
    s2 -> s3;
    s4 [shape=box, label="ship (retriable)"];
    s3 -> s4;
    done [shape=doublecircle, label="done"];
    s4 -> done;
    u0 [shape=box, style=dashed, label="undo reserve"];
    s0 -> u0 [style=dashed, label="on failure"];
    u2 [shape=box, style=dashed, label="undo hold"];
    s2 -> u2 [style=dashed, label="on failure"];
    u2 -> u0 [style=dashed];
}
"#
    );
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
    assert!(
        mermaid.contains(r#"s0["a #quot;quoted#quot; \ step"]"#),
        "{mermaid}"
    );
    let dot = saga.to_dot();
    assert!(dot.starts_with(r#"digraph "say \"hi\"" {"#), "{dot}");
    assert!(dot.contains(r#"label="a \"quoted\" \\ step""#), "{dot}");
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
    assert!(saga.to_mermaid().contains("s1 --> done((done))"));
}
