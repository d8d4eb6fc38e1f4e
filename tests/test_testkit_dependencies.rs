//! The test kit on effects kept in a saga's dependencies (where clients
//! belong): each case gets fresh fakes, and the kit compares what they
//! hold at its end as it compares the context, so a charge that ignores its
//! idempotency key, or a refund that refunds nothing, fails the kit when
//! the payment service's ledger lives in the dependencies.

use std::sync::Mutex;

use saga_core::testkit::{Durability, SagaTest, TestReport};
use saga_core::{RetryPolicy, Saga, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Order {
    charged: bool,
    shipped: bool,
}

/// A fake payment service: the idempotency key of every charge it holds,
/// and of every refund it paid out apart from a charge.
#[derive(Debug, Default)]
struct Payments {
    ledger: Mutex<Vec<String>>,
    refunds: Mutex<Vec<String>>,
}

impl Payments {
    /// What it holds: the charges less the refunds paid apart.
    fn net(&self) -> i64 {
        let charges = self.ledger.lock().unwrap().len();
        let refunds = self.refunds.lock().unwrap().len();
        charges as i64 - refunds as i64
    }
}

/// How the fake service's client behaves.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// Charges once per key; refunds the key's charge.
    Keyed,
    /// Charges again on every call (ignores the key).
    IgnoresKey,
    /// Refunds nothing.
    NoRefund,
    /// Charges under a key of its own per attempt (`{key}#{attempt}`),
    /// and refunds every attempt's charge: a retry after a lost answer
    /// charges again.
    KeyPerAttempt,
    /// Charges by the key; pays a refund under a key of its own per
    /// attempt of the compensation: a retry after a lost answer refunds
    /// again.
    RefundPerAttempt,
}

/// `charge` (with `refund`, in `attempts` attempts each; a single
/// attempt leaves the refund the default policy) then the pivot `ship`.
fn order_saga(client: Client, attempts: u32) -> Saga<Order, Payments> {
    Saga::builder("order")
        .step(
            Step::new(
                "charge",
                move |o: &mut Order, info: &StepInfo<'_, Payments>| {
                    let mut key = info.idempotency_key();
                    if client == Client::KeyPerAttempt {
                        key = format!("{key}#{}", info.attempt());
                    }
                    let mut ledger = info.dependencies().ledger.lock().unwrap();
                    if client == Client::IgnoresKey || !ledger.contains(&key) {
                        ledger.push(key);
                    }
                    o.charged = true;
                    Ok::<_, StepError>(())
                },
            )
            .retry(RetryPolicy::attempts(attempts))
            .undo_retry(if attempts > 1 {
                RetryPolicy::attempts(attempts)
            } else {
                saga_core::default_undo_retry()
            })
            .undo(
                move |o: &mut Order, _: Option<&()>, info: &StepInfo<'_, Payments>| {
                    let key = info.idempotency_key();
                    let mut ledger = info.dependencies().ledger.lock().unwrap();
                    match client {
                        Client::NoRefund => {}
                        // Every attempt's charge.
                        Client::KeyPerAttempt => ledger.retain(|k| !k.starts_with(&key)),
                        Client::RefundPerAttempt => {
                            let refund = format!("{key}#{}", info.attempt());
                            let mut refunds = info.dependencies().refunds.lock().unwrap();
                            if !refunds.contains(&refund) {
                                refunds.push(refund);
                            }
                        }
                        // One charge of the key.
                        Client::Keyed | Client::IgnoresKey => {
                            if let Some(i) = ledger.iter().position(|k| *k == key) {
                                ledger.remove(i);
                            }
                        }
                    }
                    o.charged = false;
                    Ok::<_, StepError>(())
                },
            ),
        )
        .pivot(Step::new(
            "ship",
            |o: &mut Order, _: &StepInfo<'_, Payments>| {
                o.shipped = true;
                Ok::<_, StepError>(())
            },
        ))
        .build()
        .unwrap()
}

fn kit(client: Client) -> SagaTest<Order, Payments> {
    kit_of(order_saga(client, 1))
}

fn kit_of(saga: Saga<Order, Payments>) -> SagaTest<Order, Payments> {
    SagaTest::new(&saga, Order::default)
        .with_state(|o: &Order| (o.charged, o.shipped))
        .with_fresh_dependencies(Payments::default)
        .with_dependencies_state(Payments::net)
}

/// Every failed case, with its problems, one line each.
fn failures(report: &TestReport) -> Vec<String> {
    report
        .failures()
        .map(|c| format!("{}: {}", c.name, c.problems.join("; ")))
        .collect()
}

#[tokio::test]
async fn a_charge_that_ignores_its_key_in_the_dependencies_fails_twice() {
    let report = kit(Client::IgnoresKey).twice().await;
    // Undisturbed: charged twice where a single run charges once. Rolled
    // back from `ship`: two charges, one refunded, one left.
    assert_eq!(
        failures(&report),
        [
            "no failure, every step twice: the dependencies' final state differs: 2 instead of 1; doubled one step at a time: `charge` alone makes the difference",
            "step `ship` fails cleanly, every step twice: the dependencies' final state differs: 1 instead of 0; doubled one step at a time: `charge` alone makes the difference",
        ],
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains(
            "FAIL no failure, every step twice: expected completed, got completed; compensated []; 4 action and 0 compensation invocations\n       - the dependencies' final state differs: 2 instead of 1"
        ),
        "{text}"
    );
}

/// A crash after `charge` ran but before its success was logged: the
/// recovering engine runs it again with the same key, which this client
/// ignores.
async fn a_charge_that_ignores_its_key_fails_crashes(durability: Durability) {
    let report = kit(Client::IgnoresKey).crashes(durability).await;
    let text = report.to_string();
    // On both paths: undisturbed (a charge too many), and rolled back
    // from the pivot (a charge left behind). Commit 2 logs that `charge`
    // succeeded.
    assert_eq!(
        failures(&report),
        [
            "no failure, crash before commit 2 of 3 (logs `charge` step_succeeded, `ship` step_started): the dependencies' final state differs: 2 instead of 1",
            "step `ship` fails cleanly, crash before commit 2 of 4 (logs `charge` step_succeeded, `ship` step_started): the dependencies' final state differs: 1 instead of 0",
        ],
        "{text}"
    );
    // The context cannot show it: only the dependencies do.
    assert!(!text.contains("the final state differs"), "{text}");
}

#[tokio::test]
async fn a_charge_that_ignores_its_key_in_the_dependencies_fails_crashes_in_memory() {
    a_charge_that_ignores_its_key_fails_crashes(Durability::Memory).await;
}

#[tokio::test]
async fn a_charge_that_ignores_its_key_in_the_dependencies_fails_crashes_on_sqlite() {
    a_charge_that_ignores_its_key_fails_crashes(Durability::Sqlite).await;
}

#[tokio::test]
async fn a_refund_that_refunds_nothing_in_the_dependencies_fails_failures() {
    let report = kit(Client::NoRefund).failures().await;
    let failed = failures(&report);
    // Rolled back from `ship`, and `charge` with an unknown outcome undone:
    // the charge stays.
    assert_eq!(
        failed,
        [
            "step `charge` fails, outcome unknown: rolled back, but the dependencies' state is not that of fresh ones: 1 instead of 0",
            "step `ship` fails cleanly: rolled back, but the dependencies' state is not that of fresh ones: 1 instead of 0",
            "step `ship` fails once (its retry policy does not retry it: a failure): rolled back, but the dependencies' state is not that of fresh ones: 1 instead of 0",
        ],
        "{report}"
    );
}

#[tokio::test]
async fn a_keyed_charge_in_the_dependencies_passes_every_mode() {
    let kit = kit(Client::Keyed);
    kit.check_all(Durability::Memory).await.assert_passed();
    kit.crashes(Durability::Sqlite).await.assert_passed();
}

#[tokio::test]
async fn a_state_of_shared_dependencies_is_refused_with_the_way_out() {
    let report = SagaTest::new(&order_saga(Client::Keyed, 1), Order::default)
        .with_dependencies(Payments::default())
        .with_dependencies_state(Payments::net)
        .twice()
        .await;
    assert_eq!(
        failures(&report),
        [
            "dependencies: `with_dependencies_state` compares each case's dependencies with those of another case or a fresh set: give the dependencies with `SagaTest::with_fresh_dependencies`, not `with_dependencies` (one value every case shares)"
        ],
        "{report}"
    );
}

#[tokio::test]
async fn shared_dependencies_still_serve_every_case() {
    // One value for every case, as before: nothing compared, so the
    // double charge gathers unseen (the reason for fresh dependencies).
    let report = SagaTest::new(&order_saga(Client::IgnoresKey, 1), Order::default)
        .with_dependencies(Payments::default())
        .twice()
        .await;
    report.assert_passed();
    // Undisturbed, rolled back from `ship` with every step and every
    // compensation twice, and the refund's answer lost (the default
    // compensation policy retries it).
    assert_eq!(report.cases.len(), 4, "{report}");
}

#[tokio::test]
async fn missing_dependencies_name_both_ways_to_give_them() {
    let report = SagaTest::new(&order_saga(Client::Keyed, 1), Order::default)
        .failures()
        .await;
    assert_eq!(
        failures(&report),
        [
            "dependencies: the saga needs dependencies of type `test_testkit_dependencies::Payments`: give them with `SagaTest::with_dependencies` (one value for every case) or `SagaTest::with_fresh_dependencies` (a new value per case)"
        ],
        "{report}"
    );
}

/// A charge keyed per attempt passes one failure at a time, every step
/// twice (the same attempt twice) and every crash (a re-run keeps the
/// attempt), but charges twice when its answer is lost and a retry runs
/// it again: `twice` runs that case for each step whose policy retries
/// an unknown outcome, and names it.
#[tokio::test]
async fn a_charge_keyed_per_attempt_fails_when_its_answer_is_lost_and_retried() {
    let kit = kit_of(order_saga(Client::KeyPerAttempt, 3));
    kit.failures().await.assert_passed();
    kit.crashes(Durability::Memory).await.assert_passed();
    let report = kit.twice().await;
    assert_eq!(
        failures(&report),
        [
            "step `charge` takes effect but its answer is lost, then a retry runs it again: the dependencies' final state differs: 2 instead of 1",
        ],
        "{report}"
    );
    // The correct client passes the same case.
    let report = kit_of(order_saga(Client::Keyed, 3)).twice().await;
    report.assert_passed();
    assert!(
        report.cases.iter().any(|c| c.name
            == "step `charge` takes effect but its answer is lost, then a retry runs it again"),
        "{report}"
    );
}

/// A refund paid under a key of its own per attempt passes one failure at
/// a time, every compensation twice (the same attempt twice) and every
/// crash, but refunds twice when its answer is lost and a retry runs it
/// again: `twice` runs that case for each compensation whose policy
/// retries an unknown outcome, and names it.
#[tokio::test]
async fn a_refund_keyed_per_attempt_fails_when_its_answer_is_lost_and_retried() {
    let kit = kit_of(order_saga(Client::RefundPerAttempt, 3));
    kit.crashes(Durability::Memory).await.assert_passed();
    let report = kit.twice().await;
    assert_eq!(
        failures(&report),
        [
            "compensation of `charge` takes effect but its answer is lost, then a retry runs it again (rollback from `ship` failing): the dependencies' final state differs: -1 instead of 0",
        ],
        "{report}"
    );
}
