//! Reports, ids and statuses as JSON: the shape a handler returns, pinned
//! on one compensated run, and read back.

mod support;

use saga_core::{
    ExecutionId, ExecutionStatus, Outcome, Saga, SagaReport, Step, StepError, StepInfo, StepKind,
    StepStatus,
};
use support::steps::*;

/// A compensated run on a virtual clock and a fixed id: `reserve` (undone),
/// `check` (nothing to undo), `charge` failing twice, the second time for
/// good, after a 100 ms backoff, and its compensation never run.
fn compensated() -> SagaReport {
    let saga = Saga::builder("checkout")
        .step(compensable("reserve"))
        .step(Step::new("check", |r: &mut Rec, _: &StepInfo<'_>| {
            r.push("check");
            Ok::<_, StepError>(())
        }))
        .step(
            flaky("charge", 5, || {
                StepError::new("card declined\u{1b}[2J (code 51)")
            })
            .retry(exact(2)),
        )
        .pivot(compensable_free("ship"))
        .build()
        .unwrap();
    let (_clock, options) = virtual_time();
    let err = saga
        .run_blocking_with(&mut Rec::default(), options.with_execution_id("order-42"))
        .unwrap_err();
    err.report().clone()
}

fn compensable_free(name: &'static str) -> Step<Rec, ()> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(name);
        Ok::<_, StepError>(())
    })
}

#[test]
fn a_compensated_report_serializes_to_this_json() {
    let json = serde_json::to_string_pretty(&compensated()).unwrap();
    assert_eq!(
        json,
        r#"{
  "saga": "checkout",
  "execution_id": "order-42",
  "status": "compensated",
  "steps": [
    {
      "name": "reserve",
      "kind": "compensable",
      "status": "compensated",
      "outcome": "applied",
      "attempts": 1,
      "compensation_attempts": 1,
      "duration_us": 0,
      "compensation_duration_us": 0,
      "last_error": null
    },
    {
      "name": "check",
      "kind": "no_undo",
      "status": "skipped",
      "outcome": "applied",
      "attempts": 1,
      "compensation_attempts": 0,
      "duration_us": 0,
      "compensation_duration_us": 0,
      "last_error": null
    },
    {
      "name": "charge",
      "kind": "compensable",
      "status": "failed",
      "outcome": "not_applied",
      "attempts": 2,
      "compensation_attempts": 0,
      "duration_us": 100000,
      "compensation_duration_us": 0,
      "last_error": "card declined\u001b[2J (code 51)"
    },
    {
      "name": "ship",
      "kind": "pivot",
      "status": "pending",
      "outcome": "not_started",
      "attempts": 0,
      "compensation_attempts": 0,
      "duration_us": 0,
      "compensation_duration_us": 0,
      "last_error": null
    }
  ],
  "cancel_ignored": false,
  "duration_us": 100000
}"#
    );
}

#[test]
fn a_report_reads_back_as_it_was_written() {
    let report = compensated();
    let json = serde_json::to_string(&report).unwrap();
    let back: SagaReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.saga, report.saga);
    assert_eq!(back.execution_id, report.execution_id);
    assert_eq!(back.status, report.status);
    assert_eq!(back.duration, report.duration);
    assert_eq!(back.statuses(), report.statuses());
    for (a, b) in back.steps.iter().zip(&report.steps) {
        assert_eq!(
            (a.kind, a.outcome, a.attempts, a.compensation_attempts),
            (b.kind, b.outcome, b.attempts, b.compensation_attempts)
        );
        assert_eq!(
            (a.duration, a.compensation_duration),
            (b.duration, b.compensation_duration)
        );
        assert_eq!(a.last_error, b.last_error);
    }
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
}

#[test]
fn statuses_kinds_and_outcomes_are_their_labels_both_ways() {
    for status in ExecutionStatus::ALL {
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(json, format!("\"{status}\""));
        assert_eq!(
            serde_json::from_str::<ExecutionStatus>(&json).unwrap(),
            status
        );
    }
    for status in StepStatus::ALL {
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(json, format!("\"{status}\""));
        assert_eq!(serde_json::from_str::<StepStatus>(&json).unwrap(), status);
    }
    for outcome in Outcome::ALL {
        let json = serde_json::to_string(&outcome).unwrap();
        assert_eq!(json, format!("\"{outcome}\""));
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
    }
    for kind in StepKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{kind}\""));
        assert_eq!(serde_json::from_str::<StepKind>(&json).unwrap(), kind);
    }
    let err = serde_json::from_str::<ExecutionStatus>("\"finished\"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown execution status `finished`, expected one of: running, compensating, completed, compensated, cancelled, stuck, abandoned"
    );
}

#[test]
fn an_id_is_its_text_and_parses_from_any_text() {
    let id: ExecutionId = "order-42/retry".parse().unwrap();
    assert_eq!(serde_json::to_string(&id).unwrap(), "\"order-42/retry\"");
    let back: ExecutionId = serde_json::from_str("\"order-42/retry\"").unwrap();
    assert_eq!(back, id);
    let generated = ExecutionId::generate();
    let json = serde_json::to_string(&generated).unwrap();
    assert_eq!(json, format!("\"{generated}\""));
    assert_eq!(
        serde_json::from_str::<ExecutionId>(&json).unwrap(),
        generated
    );
}
