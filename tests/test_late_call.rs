//! A call that reaches a service after its compensation is refused when
//! the compensation voids its idempotency key (docs/OPERATIONS.md, "What to
//! ask of the services a saga calls"; `examples/late_call.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(dead_code)]
#[path = "../examples/late_call.rs"]
mod late_call;

use late_call::{Entry, Ledger, charge_saga};
use saga_core::{ExecutionStatus, SagaError, StepStatus};

#[tokio::test]
async fn a_charge_arriving_after_its_compensation_is_refused() {
    let ledger = Ledger::default();
    let late = Arc::new(Mutex::new(None));
    let saga = charge_saga(&ledger, Duration::from_millis(200), Arc::clone(&late)).unwrap();

    let error = saga.run(&mut ()).await.unwrap_err();
    let SagaError::Compensated { ref report, .. } = error else {
        panic!("expected a rollback, got {error:?}");
    };
    assert_eq!(report.status, ExecutionStatus::Compensated);
    assert_eq!(report.steps[0].status, StepStatus::Compensated);
    let key = format!("{}/charge", report.execution_id);
    // The compensation ran before the charge arrived: the key is voided.
    assert_eq!(ledger.entry(&key), Some(Entry::Voided));

    let request = late.lock().unwrap().take().expect("the charge was sent");
    let answer = request.await.unwrap();
    assert_eq!(
        answer,
        Err(format!("charge `{key}` refused: it was already undone"))
    );
    assert_eq!(ledger.entry(&key), Some(Entry::Voided));
}

#[test]
fn the_ledger_applies_a_key_once_and_refuses_an_undone_one() {
    // The ledger's rules, one at a time.
    let ledger = Ledger::default();
    ledger.charge("e/charge", 100).unwrap();
    ledger.charge("e/charge", 100).unwrap();
    assert_eq!(ledger.entry("e/charge"), Some(Entry::Charged(100)));
    ledger.refund("e/charge");
    assert_eq!(ledger.entry("e/charge"), Some(Entry::Refunded(100)));
    assert!(ledger.charge("e/charge", 100).is_err());

    ledger.refund("f/charge");
    assert_eq!(ledger.entry("f/charge"), Some(Entry::Voided));
    assert!(ledger.charge("f/charge", 100).is_err());
}
