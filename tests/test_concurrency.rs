//! One definition, run from 100 tokio tasks at once, each with its own
//! context: no cross-talk, distinct execution ids, and the definition
//! holds no run state.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use saga_core::{ExecutionStatus, RetryPolicy, Saga, SagaError, Step, StepError, StepInfo};
use support::steps::{undo_effect, unless_hung};
use tokio::sync::Barrier;

/// One task's own context.
struct Order {
    n: usize,
    effects: Vec<String>,
    /// Every execution id a step or compensation of this run saw.
    ids: HashSet<String>,
    barrier: Arc<Barrier>,
}

fn step(name: &'static str) -> Step<Order, String> {
    Step::new_async(name, move |o: &mut Order, info: &StepInfo<'_>| {
        let id = info.execution_id().to_string();
        Box::pin(async move {
            o.ids.insert(id);
            // Interleave with the other runs at every step.
            tokio::task::yield_now().await;
            o.effects.push(format!("do {name} for {}", o.n));
            Ok::<_, StepError>(format!("{name}-{}", o.n))
        })
    })
    .undo_async(
        move |o: &mut Order, out: Option<&String>, info: &StepInfo<'_>| {
            let id = info.execution_id().to_string();
            Box::pin(async move {
                o.ids.insert(id);
                tokio::task::yield_now().await;
                o.effects.push(undo_effect(name, out));
                Ok::<_, StepError>(())
            })
        },
    )
}

#[test]
fn a_definition_is_send_sync_and_clone() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<Saga<Order>>();
    assert_shareable::<Saga>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_definition_runs_from_100_tasks_without_cross_talk() {
    const RUNS: usize = 100;
    let saga = Saga::builder("concurrent")
        .step(step("reserve"))
        .step(Step::new_async(
            "wait_for_all",
            |o: &mut Order, _: &StepInfo<'_>| {
                Box::pin(async move {
                    // Every run is in flight at once: all of them hold a
                    // reservation before any goes on.
                    o.barrier.wait().await;
                    Ok::<_, StepError>(())
                })
            },
        ))
        .step(step("charge"))
        .step(Step::new_async(
            "ship",
            |o: &mut Order, _: &StepInfo<'_>| {
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    // Every third order fails and rolls back.
                    if o.n % 3 == 0 {
                        Err(StepError::new(format!("no courier for {}", o.n)))
                    } else {
                        o.effects.push(format!("do ship for {}", o.n));
                        Ok(())
                    }
                })
            },
        ))
        .undo_retry(RetryPolicy::none())
        .build()
        .unwrap();

    let barrier = Arc::new(Barrier::new(RUNS));
    let tasks: Vec<_> = (0..RUNS)
        .map(|n| {
            let saga = saga.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let mut order = Order {
                    n,
                    effects: Vec::new(),
                    ids: HashSet::new(),
                    barrier,
                };
                let result = saga.run(&mut order).await;
                (order, result)
            })
        })
        .collect();

    // If runs could not all be in flight at once, the barrier would never
    // open: a generous limit turns that hang into a failure.
    let results = unless_hung(futures_join(tasks)).await;
    let mut ids = HashSet::new();
    for (order, result) in results {
        let n = order.n;
        let expected: Vec<String> = if n % 3 == 0 {
            vec![
                format!("do reserve for {n}"),
                format!("do charge for {n}"),
                format!("undo charge with charge-{n}"),
                format!("undo reserve with reserve-{n}"),
            ]
        } else {
            vec![
                format!("do reserve for {n}"),
                format!("do charge for {n}"),
                format!("do ship for {n}"),
            ]
        };
        assert_eq!(order.effects, expected, "run {n}");
        let report = match &result {
            Ok(report) => report,
            Err(err) => {
                assert!(
                    matches!(err, SagaError::Compensated { .. }),
                    "run {n}: {err}"
                );
                assert_eq!(
                    std::error::Error::source(err).unwrap().to_string(),
                    format!("no courier for {n}")
                );
                err.report()
            }
        };
        let status = if n % 3 == 0 {
            ExecutionStatus::Compensated
        } else {
            ExecutionStatus::Completed
        };
        assert_eq!(report.status, status, "run {n}");
        // Every step and compensation of this run saw the run's own id.
        assert_eq!(
            order.ids,
            HashSet::from([report.execution_id.to_string()]),
            "run {n}"
        );
        assert!(
            ids.insert(report.execution_id.clone()),
            "id reused: run {n}"
        );
    }
    assert_eq!(ids.len(), RUNS);
}

/// Awaits every task in order.
async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[test]
fn blocking_runs_on_many_threads_share_one_definition() {
    #[derive(Default)]
    struct Count(Vec<u32>);
    let saga = Saga::builder("threads")
        .step(Step::new("a", |c: &mut Count, info: &StepInfo<'_>| {
            c.0.push(info.attempt());
            Ok::<_, StepError>(())
        }))
        .step(Step::new("b", |c: &mut Count, _: &StepInfo<'_>| {
            c.0.push(2);
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| {
                    let mut count = Count::default();
                    for _ in 0..50 {
                        saga.run_blocking(&mut count).unwrap();
                    }
                    count.0
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), [1, 2].repeat(50));
        }
    });
}

/// One definition runs many times in a row, each run on its own state: a
/// later run's rollback never compensates an earlier run's steps.
#[test]
fn one_definition_runs_many_times_each_on_its_own_state() {
    struct Run {
        n: u32,
        effects: Vec<String>,
    }
    let saga = Saga::builder("reuse")
        .step(
            Step::new("a", |r: &mut Run, _: &StepInfo<'_>| {
                r.effects.push(format!("do a{}", r.n));
                Ok::<_, StepError>(r.n)
            })
            .undo(|r: &mut Run, n: Option<&u32>, _: &StepInfo<'_>| {
                r.effects.push(format!("undo a{}", n.unwrap()));
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("b", |r: &mut Run, _: &StepInfo<'_>| {
            if r.n % 2 == 0 {
                Err("even runs fail")
            } else {
                r.effects.push(format!("do b{}", r.n));
                Ok(())
            }
        }))
        .build()
        .unwrap();
    let runs: Vec<Vec<String>> = (1..=4)
        .map(|n| {
            let mut run = Run {
                n,
                effects: Vec::new(),
            };
            let _ = saga.run_blocking(&mut run);
            run.effects
        })
        .collect();
    assert_eq!(
        runs,
        [
            vec!["do a1", "do b1"],
            vec!["do a2", "undo a2"],
            vec!["do a3", "do b3"],
            vec!["do a4", "undo a4"],
        ]
    );
}
