//! The test kit (`saga_core::testkit`) on the project's own example sagas,
//! and on sagas with the mistakes it exists to find: a compensation that
//! cannot handle an unknown outcome, a step that is not idempotent, a
//! context that loses a field in the durable log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::Duration;

use saga_core::store::{Created, MemoryStore, SagaStore, StoreError};
use saga_core::testkit::{DelayedStore, Durability, SagaTest, StoreOp, TestReport};
use saga_core::{ExecutionId, ExecutionStatus};
use saga_core::{Parallel, RetryPolicy, Saga, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};

mod support;

use support::stores::new_execution;

#[path = "../examples/durable_order.rs"]
#[allow(dead_code)]
mod durable_order;

use durable_order::{Order, order_saga};

#[path = "../examples/order_saga.rs"]
#[allow(dead_code)]
mod macro_order;

fn new_order() -> Order {
    Order {
        id: "order-42".to_owned(),
        items: 2,
        ..Order::default()
    }
}

fn order_state(o: &Order) -> (bool, Option<String>, bool) {
    (o.reserved, o.charge.clone(), o.shipped)
}

fn names(report: &TestReport) -> Vec<&str> {
    report.cases.iter().map(|c| c.name.as_str()).collect()
}

fn failed(report: &TestReport) -> Vec<&str> {
    report.failures().map(|c| c.name.as_str()).collect()
}

// The example's steps "call a remote service" for a second each: paused
// time makes that free.
#[tokio::test(start_paused = true)]
async fn the_example_order_saga_passes_every_failure_and_repeat() {
    let kit = SagaTest::new(&order_saga().unwrap(), new_order).with_state(order_state);
    let report = kit.failures().await;
    report.assert_passed();
    // 4 steps: undisturbed, 3 failures each (clean, unknown, once), 2
    // compensations.
    assert_eq!(report.cases.len(), 1 + 4 * 3 + 2, "{report}");
    let report = kit.twice().await;
    report.assert_passed();
    // Undisturbed with every step twice, and rolled back from
    // `charge_card` and from `ship` with every step twice, then with
    // every compensation twice; `email` (retried forever after the pivot)
    // taking effect with its answer lost and run again, and the same of
    // the compensations of `reserve_stock` and `charge_card`.
    assert_eq!(report.cases.len(), 8, "{report}");
    assert!(
        names(&report).contains(
            &"step `email` takes effect but its answer is lost, then a retry runs it again"
        ),
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_example_order_saga_survives_a_crash_at_every_commit_in_memory() {
    let kit = SagaTest::new(&order_saga().unwrap(), new_order).with_state(order_state);
    let report = kit.crashes(Durability::Memory).await;
    report.assert_passed();
    // Three paths (undisturbed; `email`, retried forever after the
    // pivot, failing once; rolled back from the pivot `ship`), each with
    // its own run and a crash before and after each of its commits.
    let text = report.to_string();
    assert!(text.contains("no failure, durable, 5 commits"), "{text}");
    assert!(
        text.contains("step `email` fails once, then succeeds, durable, 7 commits"),
        "{text}"
    );
    assert!(
        text.contains("step `ship` fails cleanly, durable, 6 commits"),
        "{text}"
    );
    assert_eq!(
        report.cases.len(),
        (1 + 5 * 2) + (1 + 7 * 2) + (1 + 6 * 2),
        "{text}"
    );
    // A crash while the pivot ran makes its outcome unknown: the rules,
    // and the kit, expect the run to end stuck then.
    assert!(
        text.contains(
            "step `ship` fails cleanly, crash after commit 3 of 6 (logs `charge_card` step_succeeded, `ship` step_started) (while the failing step ran: its outcome is unknown): expected stuck, got stuck"
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_example_order_saga_survives_a_crash_at_every_commit_on_sqlite() {
    let kit = SagaTest::new(&order_saga().unwrap(), new_order).with_state(order_state);
    kit.crashes(Durability::Sqlite).await.assert_passed();
}

/// A trip: a compensable step, a parallel group, the pivot, and a
/// retriable step after it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Trip {
    held: bool,
    paid: bool,
    emailed: bool,
}

fn trip_saga(booked: &Arc<AtomicU32>) -> Saga<Trip> {
    let book = |name: &'static str| {
        let (up, down) = (Arc::clone(booked), Arc::clone(booked));
        Step::shared_async(name, move |_: &Trip, info: &StepInfo<'_>| {
            let up = Arc::clone(&up);
            let key = info.idempotency_key();
            Box::pin(async move {
                up.fetch_add(1, Ordering::SeqCst);
                Ok::<_, StepError>(key)
            })
        })
        .durable()
        .undo_shared(move |_: &Trip, key: Option<&String>, _: &StepInfo<'_>| {
            // `None`: the booking may or may not exist; a real service
            // looks it up by the idempotency key. Here: nothing to undo.
            if key.is_some() {
                down.fetch_sub(1, Ordering::SeqCst);
            }
            Ok::<_, StepError>(())
        })
    };
    Saga::builder("trip")
        .step(
            Step::new("hold", |t: &mut Trip, _: &StepInfo<'_>| {
                t.held = true;
                Ok::<_, StepError>(())
            })
            .undo(|t: &mut Trip, _: Option<&()>, _: &StepInfo<'_>| {
                t.held = false;
                Ok::<_, StepError>(())
            }),
        )
        .parallel(Parallel::new().step(book("hotel")).step(book("flight")))
        .pivot(Step::new("pay", |t: &mut Trip, _: &StepInfo<'_>| {
            t.paid = true;
            Ok::<_, StepError>(())
        }))
        .step(
            Step::new("email", |t: &mut Trip, _: &StepInfo<'_>| {
                t.emailed = true;
                Ok::<_, StepError>(())
            })
            .retry(RetryPolicy::attempts(3)),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_saga_with_a_group_a_pivot_and_a_retriable_step_passes() {
    let booked = Arc::new(AtomicU32::new(0));
    let kit = SagaTest::new(&trip_saga(&booked), Trip::default)
        .with_state(|t: &Trip| (t.held, t.paid, t.emailed));
    let report = kit.failures().await;
    report.assert_passed();
    let expectations: Vec<(&str, &str)> = report
        .cases
        .iter()
        .map(|c| (c.name.as_str(), c.expected.label()))
        .collect();
    assert_eq!(
        expectations,
        [
            ("no failure", "completed"),
            ("step `hold` fails cleanly", "compensated"),
            ("step `hold` fails, outcome unknown", "compensated"),
            (
                "step `hold` fails once (its retry policy does not retry it: a failure)",
                "compensated"
            ),
            ("step `hotel` fails cleanly", "compensated"),
            ("step `hotel` fails, outcome unknown", "compensated"),
            (
                "step `hotel` fails once (its retry policy does not retry it: a failure)",
                "compensated"
            ),
            ("step `flight` fails cleanly", "compensated"),
            ("step `flight` fails, outcome unknown", "compensated"),
            (
                "step `flight` fails once (its retry policy does not retry it: a failure)",
                "compensated"
            ),
            ("step `pay` fails cleanly", "compensated"),
            ("step `pay` fails, outcome unknown", "stuck"),
            (
                "step `pay` fails once (its retry policy does not retry it: a failure)",
                "compensated"
            ),
            ("step `email` fails cleanly", "stuck"),
            ("step `email` fails, outcome unknown", "stuck"),
            ("step `email` fails once, then succeeds", "completed"),
            (
                "compensation of `hold` fails (rollback from `hotel` failing)",
                "stuck"
            ),
            (
                "compensation of `hotel` fails (rollback from `pay` failing)",
                "stuck"
            ),
            (
                "compensation of `flight` fails (rollback from `pay` failing)",
                "stuck"
            ),
        ]
    );
    kit.twice().await.assert_passed();
    kit.crashes(Durability::Memory).await.assert_passed();
}

#[tokio::test]
async fn a_compensation_that_needs_the_output_is_caught_on_an_unknown_outcome() {
    let saga = Saga::builder("careless")
        .step(
            Step::new("reserve", |n: &mut u32, _: &StepInfo<'_>| {
                *n += 1;
                Ok::<_, StepError>(7_u32)
            })
            .durable()
            .undo(|n: &mut u32, id: Option<&u32>, _: &StepInfo<'_>| {
                // The mistake: an unknown outcome gives `None`.
                let id = id.ok_or("no reservation id")?;
                *n -= id / 7;
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("charge", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let report = SagaTest::new(&saga, || 0_u32).failures().await;
    assert!(!report.passed());
    assert_eq!(failed(&report), ["step `reserve` fails, outcome unknown"]);
    let text = report.to_string();
    assert!(
        text.starts_with("saga `careless`: 8 cases, 7 passed, 1 failed\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  FAIL step `reserve` fails, outcome unknown: expected compensated, got stuck;"
        ),
        "{text}"
    );
    assert!(text.contains("no reservation id"), "{text}");
}

#[tokio::test]
async fn a_step_that_is_not_idempotent_is_caught_by_running_it_twice() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Account {
        balance: i64,
    }
    let saga = Saga::builder("payout")
        .step(
            Step::new("debit", |a: &mut Account, _: &StepInfo<'_>| {
                a.balance -= 10; // repeated, it debits twice
                Ok::<_, StepError>(())
            })
            .undo(|a: &mut Account, _: Option<&()>, _: &StepInfo<'_>| {
                a.balance += 10;
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("notify", |_: &mut Account, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let kit = SagaTest::new(&saga, Account::default).with_state(|a: &Account| a.balance);
    // One failure at a time finds nothing wrong...
    kit.failures().await.assert_passed();
    // ...running each step twice does: the undisturbed run ends at -20.
    let report = kit.twice().await;
    // The credit retried after its answer was lost credits twice too.
    assert_eq!(
        failed(&report),
        [
            "no failure, every step twice",
            "step `notify` fails cleanly, every step twice",
            "step `notify` fails cleanly, every compensation twice",
            "compensation of `debit` takes effect but its answer is lost, then a retry runs it again (rollback from `notify` failing)",
        ]
    );
    let text = report.to_string();
    assert!(
        text.contains("the final state differs: -20 instead of -10"),
        "{report}"
    );
    // On the rollback path the double debit is not hidden by a double
    // credit: each is doubled in a case of its own.
    assert!(
        text.contains("the final state differs: -10 instead of 0"),
        "{report}"
    );
    assert!(
        text.contains("the final state differs: 10 instead of 0"),
        "{report}"
    );
}

/// A case's summary counts every run of the user's code: both runs of a
/// doubled action or compensation, and not an attempt the kit failed
/// without running it.
#[tokio::test]
async fn a_summary_counts_every_run_of_an_action_and_a_compensation() {
    let saga = Saga::builder("pair")
        .step(
            Step::new("reserve", |n: &mut u32, _: &StepInfo<'_>| {
                *n = 1;
                Ok::<_, StepError>(())
            })
            .undo(|n: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
                *n = 0;
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("notify", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let report = SagaTest::new(&saga, || 0).twice().await;
    report.assert_passed();
    let summaries: Vec<(&str, &str)> = report
        .cases
        .iter()
        .map(|c| (c.name.as_str(), c.summary.as_str()))
        .collect();
    assert_eq!(
        summaries,
        [
            (
                "no failure, every step twice",
                "compensated []; 4 action and 0 compensation invocations"
            ),
            // `notify` is failed by the kit, not run.
            (
                "step `notify` fails cleanly, every step twice",
                "compensated [reserve]; 2 action and 1 compensation invocations"
            ),
            (
                "step `notify` fails cleanly, every compensation twice",
                "compensated [reserve]; 1 action and 2 compensation invocations"
            ),
            // The first attempt ran and its answer was lost; the retry
            // ran it again.
            (
                "compensation of `reserve` takes effect but its answer is lost, then a retry runs it again (rollback from `notify` failing)",
                "compensated [reserve]; 1 action and 2 compensation invocations"
            ),
        ]
    );
}

/// Steps that retry: `crashes` also runs the path on which each fails its
/// first attempt and succeeds on the next, and crashes it at every commit,
/// so a crash lands after a failure that will be retried (in the backoff,
/// which the kit does not wait for) and in the retry.
#[tokio::test]
async fn crashes_land_in_the_backoff_of_every_step_that_retries() {
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let step = |name: &'static str| {
        let attempts = Arc::clone(&attempts);
        Step::new(name, move |n: &mut u32, info: &StepInfo<'_>| {
            attempts.lock().unwrap().push((name, info.attempt()));
            *n += 1;
            Ok::<_, StepError>(())
        })
    };
    let saga = Saga::builder("retrying")
        .step(
            step("reserve")
                .retry(RetryPolicy::attempts(3).with_backoff(Duration::from_secs(60)))
                .undo(|n: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
                    *n -= 1;
                    Ok::<_, StepError>(())
                }),
        )
        .pivot(step("charge"))
        // After the pivot, no policy means retried forever.
        .step(step("email"))
        .build()
        .unwrap();
    let kit = SagaTest::new(&saga, || 0).with_state(|n: &u32| *n);
    let started = std::time::Instant::now();
    let report = kit.crashes(Durability::Memory).await;
    report.assert_passed();
    // The backoff (a minute) is not waited for.
    assert!(started.elapsed() < Duration::from_secs(30), "{report}");
    let text = report.to_string();
    // Undisturbed: `reserve` started, then each step's success with the
    // next step's start (4 commits). On the retry path, `reserve` and
    // `email` each add a failure that will be retried and a second start:
    // commits 2 and 6. A crash just after either is a crash in that
    // step's backoff; the recovered run must still complete.
    assert!(text.contains("no failure, durable, 4 commits"), "{text}");
    assert!(
        text.contains("ok   steps `reserve`, `email` fail once, then succeed, durable, 8 commits: expected completed, got completed"),
        "{text}"
    );
    for commit in 1..=8 {
        for when in ["before", "after"] {
            let case = format!(
                "ok   steps `reserve`, `email` fail once, then succeed, crash {when} commit {commit} of 8 (logs "
            );
            let line = text.lines().find(|l| l.trim_start().starts_with(&case));
            assert!(
                line.is_some_and(|l| l.contains("): expected completed, got completed")),
                "{case}\n{text}"
            );
        }
    }
    // Each crash names what its commit logs: the backoff's failures.
    assert!(
        text.contains("crash after commit 2 of 8 (logs `reserve` step_failed): expected completed"),
        "{text}"
    );
    assert!(
        text.contains("crash after commit 6 of 8 (logs `email` step_failed): expected completed"),
        "{text}"
    );
    // The retries after a crash in the backoff were second attempts.
    assert!(
        attempts.lock().unwrap().contains(&("reserve", 2)),
        "{:?}",
        attempts.lock().unwrap()
    );
    // Undisturbed, the retry path, and the rollback from the pivot.
    assert_eq!(
        report.cases.len(),
        (1 + 2 * 4) + (1 + 2 * 8) + (1 + 2 * 4),
        "{text}"
    );
}

#[tokio::test]
async fn a_context_that_loses_a_field_in_the_log_is_caught_by_a_crash() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Upload {
        // The mistake: not logged, so lost on recovery.
        #[serde(skip)]
        session: Option<String>,
        done: bool,
    }
    let saga = Saga::builder("upload")
        .step(Step::new("open", |u: &mut Upload, _: &StepInfo<'_>| {
            u.session = Some("s-1".to_owned());
            Ok::<_, StepError>(())
        }))
        .pivot(Step::new("send", |u: &mut Upload, _: &StepInfo<'_>| {
            u.session.as_ref().ok_or("no session")?;
            u.done = true;
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let kit = SagaTest::new(&saga, Upload::default).with_state(|u: &Upload| u.done);
    kit.failures().await.assert_passed();
    let report = kit.crashes(Durability::Memory).await;
    assert!(!report.passed(), "{report}");
    // Recovered after `open` succeeded, `send` finds no session.
    let text = report.to_string();
    assert!(
        text.contains("FAIL no failure, crash after commit 2 of 3 (logs `open` step_succeeded, `send` step_started): expected completed, got stuck"),
        "{text}"
    );
}

#[tokio::test]
async fn a_step_whose_output_cannot_be_logged_is_reported_not_run() {
    let saga = Saga::builder("opaque")
        .step(Step::new("make", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<_, StepError>(5_u64)
        }))
        .build()
        .unwrap();
    let report = SagaTest::new(&saga, || 0_u32)
        .crashes(Durability::Memory)
        .await;
    assert_eq!(report.cases.len(), 1, "{report}");
    let text = report.to_string();
    assert!(text.contains("cannot register the saga"), "{text}");
    assert!(
        text.contains("a `Step` built by hand from `.durable()`"),
        "{text}"
    );
}

/// `examples/order_saga.rs`, checked by the kit: a failure (clean or of
/// unknown outcome) at every step and compensation, every step and
/// compensation run twice, and a crash at every commit. Its reservation is keyed by the order, so an
/// unknown outcome is undone and a repeated call absorbed.
#[tokio::test]
async fn the_macro_example_order_saga_passes_the_kit() {
    let kit = SagaTest::new(&macro_order::order_saga(), || macro_order::Order {
        stock: 10,
        ..macro_order::Order::default()
    })
    .with_state(|o: &macro_order::Order| (o.id, o.stock, o.charged_cents, o.shipped));
    let report = kit.failures().await;
    assert_eq!(report.cases.len(), 1 + 4 * 3 + 3, "{report}");
    report.assert_passed();
    let report = kit.twice().await;
    // Undisturbed, and each of its three rollback paths with every step
    // twice, then with every compensation twice; `charge_payment`
    // (`retry 3`) taking effect with its answer lost, then run again, and
    // the same of its three compensations.
    assert_eq!(report.cases.len(), 1 + 3 * 2 + 1 + 3, "{report}");
    report.assert_passed();
    // Durable: its steps' outputs (`u64`, `u32`) are logged without an
    // annotation. Each run uncrashed, then crashed before and after each
    // of its commits: the run that completes (5 commits), the run in which
    // `charge_payment` (`retry 3`) fails once (7) and the longest rollback
    // (8).
    let report = kit.crashes(Durability::Memory).await;
    assert_eq!(
        report.cases.len(),
        (1 + 2 * 5) + (1 + 2 * 7) + (1 + 2 * 8),
        "{report}"
    );
    report.assert_passed();
}

#[tokio::test]
async fn a_rollback_that_goes_on_past_a_failed_compensation_is_expected_to() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Books {
        a: bool,
        b: bool,
    }
    let saga = Saga::builder("books")
        .continue_on_compensation_failure(true)
        .step(
            Step::new("a", |s: &mut Books, _: &StepInfo<'_>| {
                s.a = true;
                Ok::<_, StepError>(())
            })
            .undo(|s: &mut Books, _: Option<&()>, _: &StepInfo<'_>| {
                s.a = false;
                Ok::<_, StepError>(())
            }),
        )
        .step(
            Step::new("b", |s: &mut Books, _: &StepInfo<'_>| {
                s.b = true;
                Ok::<_, StepError>(())
            })
            .undo(|s: &mut Books, _: Option<&()>, _: &StepInfo<'_>| {
                s.b = false;
                Ok::<_, StepError>(())
            }),
        )
        .pivot(Step::new("close", |_: &mut Books, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let report = SagaTest::new(&saga, Books::default)
        .with_state(|s: &Books| (s.a, s.b))
        .failures()
        .await;
    report.assert_passed();
    // `b`'s compensation fails; `a`'s still runs (and the kit accepts it).
    let case = report
        .cases
        .iter()
        .find(|c| c.name.starts_with("compensation of `b` fails"))
        .unwrap();
    assert_eq!(case.expected, saga_core::ExecutionStatus::Stuck);
    assert!(case.summary.starts_with("compensated [a];"), "{report}");
}

#[tokio::test]
async fn a_compensation_that_is_not_idempotent_is_caught_though_its_step_is_keyed() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Stock {
        units: i64,
        /// The idempotency keys the reservation has seen.
        keys: Vec<String>,
    }
    let saga = Saga::builder("reserve")
        .step(
            Step::new("reserve", |s: &mut Stock, info: &StepInfo<'_>| {
                // Keyed: a repeat with the same key is absorbed.
                let key = info.idempotency_key();
                if !s.keys.contains(&key) {
                    s.keys.push(key);
                    s.units -= 1;
                }
                Ok::<_, StepError>(())
            })
            .undo(|s: &mut Stock, _: Option<&()>, _: &StepInfo<'_>| {
                s.units += 1; // repeated, it puts back twice
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("notify", |_: &mut Stock, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let kit = SagaTest::new(&saga, Stock::default).with_state(|s: &Stock| s.units);
    kit.failures().await.assert_passed();
    let report = kit.twice().await;
    // The step's key absorbs its repeat: no case blames it; the
    // compensation run twice puts back two units for one.
    let lost = "compensation of `reserve` takes effect but its answer is lost, then a retry runs it again (rollback from `notify` failing)";
    assert_eq!(
        names(&report),
        [
            "no failure, every step twice",
            "step `notify` fails cleanly, every step twice",
            "step `notify` fails cleanly, every compensation twice",
            lost,
        ]
    );
    // Its retry after a lost answer puts back two units too.
    assert_eq!(
        failed(&report),
        [
            "step `notify` fails cleanly, every compensation twice",
            lost
        ]
    );
    assert!(
        report
            .to_string()
            .contains("the final state differs: 1 instead of 0"),
        "{report}"
    );
}

fn disk_full() -> StoreError {
    StoreError::Backend {
        store: "the test store".into(),
        what: "writing".into(),
        source: "disk full".into(),
    }
}

#[tokio::test]
async fn a_commit_refused_before_the_call_never_reaches_the_store() {
    let memory = MemoryStore::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = DelayedStore::new(memory.clone(), Duration::ZERO).before_call({
        let seen = Arc::clone(&seen);
        move |call| {
            seen.lock().unwrap().push((call.op, call.commit));
            if call.commit == Some(1) {
                return Err(disk_full());
            }
            Ok(())
        }
    });
    let ttl = Duration::from_secs(60);
    let err = store
        .create(new_execution("x"), "a", ttl)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err}");
    let id = ExecutionId::new("x");
    assert_eq!(memory.get(&id).await.unwrap(), None, "written anyway");
    // The retry is commit 2 and goes through; reads are not commits.
    let Created::New(_) = store.create(new_execution("x"), "a", ttl).await.unwrap() else {
        panic!("not created")
    };
    assert!(store.get(&id).await.unwrap().is_some());
    assert_eq!(store.commits(), 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (StoreOp::Create, Some(1)),
            (StoreOp::Create, Some(2)),
            (StoreOp::Get, None)
        ]
    );
}

#[tokio::test]
async fn a_create_refused_after_the_write_is_stored_and_its_lease_given_back() {
    let memory = MemoryStore::new();
    let store = DelayedStore::new(memory.clone(), Duration::ZERO).after_call(|call, answer| {
        assert!(answer.is_ok(), "the inner store failed: {answer:?}");
        if call.op == StoreOp::Create {
            return Err(disk_full());
        }
        Ok(())
    });
    let err = store
        .create(new_execution("x"), "a", Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err}");
    // Written, but the caller never heard: no one holds its lease.
    let id = ExecutionId::new("x");
    let record = memory.get(&id).await.unwrap().expect("not written");
    assert_eq!(record.status, ExecutionStatus::Running);
    assert_eq!(record.owner, None);
    assert!(
        memory
            .claim(&id, "b", Duration::from_secs(60))
            .await
            .unwrap()
            .is_some(),
        "the lease was not given back"
    );
}

/// The delegating store passes the listing and context reads on as
/// themselves (not through the trait's defaults, which load every
/// context), so a wrapped SQLite or PostgreSQL store keeps its cheap
/// listing.
#[tokio::test]
async fn the_delegating_store_passes_summaries_and_context_reads_on() {
    let memory = MemoryStore::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = DelayedStore::new(memory.clone(), Duration::ZERO).before_call({
        let seen = Arc::clone(&seen);
        move |call| {
            seen.lock().unwrap().push(call.op);
            Ok(())
        }
    });
    let ttl = Duration::from_secs(60);
    memory.create(new_execution("x"), "a", ttl).await.unwrap();
    let summaries = store
        .list_summaries(saga_core::store::ListQuery::default())
        .await
        .unwrap();
    assert_eq!(summaries.len(), 1);
    let id = ExecutionId::new("x");
    assert_eq!(
        store.context(&id).await.unwrap(),
        memory.context(&id).await.unwrap()
    );
    assert_eq!(
        store.latest_context(&id).await.unwrap(),
        memory.latest_context(&id).await.unwrap()
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            StoreOp::ListSummaries,
            StoreOp::Context,
            StoreOp::LatestContext
        ]
    );
}

/// The kit's Cargo snippet depends on saga-core as the README says (by
/// path, until it is published), with the feature on.
#[test]
fn the_kits_cargo_snippet_depends_on_saga_core_as_the_readme_says() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |file: &str| std::fs::read_to_string(format!("{root}/{file}")).unwrap();
    let readme = read("README.md");
    let kit = read("saga-core/src/testkit/mod.rs");
    // The README's `[dependencies]` line: `saga-core = { path = "..", ...`.
    let path = readme
        .lines()
        .find_map(|l| l.strip_prefix("saga-core = { path = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("a saga-core path dependency in README.md");
    let snippet = format!("//! saga-core = {{ path = \"{path}\", features = [\"testkit\"] }}");
    assert!(
        kit.lines().any(|l| l == snippet),
        "saga-core/src/testkit/mod.rs lacks `{snippet}`"
    );
    assert!(
        readme.contains(&format!(
            "saga-core = {{ path = \"{path}\", features = [\"testkit\"] }}"
        )),
        "README.md lacks the kit's dev-dependency"
    );
}
