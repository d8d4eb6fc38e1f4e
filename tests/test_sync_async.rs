//! Sync and async steps mixed in one saga, run with `run` and with
//! `run_blocking` (with no runtime, and from inside a tokio runtime), and
//! the `Task` trait (sync and async actions and undos, options as consts).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::{
    BoxFuture, ExecutionStatus, RetrySpec, Saga, SagaError, Step, StepError, StepInfo, StepKind,
    Task, TaskFn, TaskFuture, UndoFn,
};
use support::steps::*;

fn async_step(name: &'static str) -> Step<Rec, String> {
    Step::new_async(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        Box::pin(async move {
            // A real suspension point: the step only finishes if the
            // executor really drives it.
            tokio::task::yield_now().await;
            r.push(format!("do {name} (async)"));
            Ok::<_, StepError>(format!("{name}-out"))
        })
    })
    .undo_async(move |r: &mut Rec, out: Option<&String>, _: &StepInfo<'_>| {
        Box::pin(async move {
            tokio::task::yield_now().await;
            r.push(undo_effect(&format!("{name} (async)"), out));
            Ok::<_, StepError>(())
        })
    })
}

fn mixed(fail_at_end: bool) -> Saga<Rec> {
    let builder = Saga::builder("mixed")
        .step(compensable("a"))
        .step(async_step("b"))
        .step(compensable("c"))
        .step(async_step("d"));
    let builder = if fail_at_end {
        builder.step(failing("e", declined))
    } else {
        builder
    };
    builder.build().unwrap()
}

const FORWARD: [&str; 4] = ["do a", "do b (async)", "do c", "do d (async)"];
const ROLLBACK: [&str; 5] = [
    "try e#1",
    "undo d (async) with d-out",
    "undo c with c-out",
    "undo b (async) with b-out",
    "undo a with a-out",
];

#[tokio::test]
async fn mixed_saga_with_run() {
    let mut rec = Rec::default();
    let report = mixed(false).run(&mut rec).await.unwrap();
    assert_eq!(rec.effects, FORWARD);
    assert_eq!(report.status, ExecutionStatus::Completed);

    let mut rec = Rec::default();
    mixed(true).run(&mut rec).await.unwrap_err();
    assert_eq!(rec.effects, [&FORWARD[..], &ROLLBACK[..]].concat());
}

#[test]
fn mixed_saga_with_run_blocking_and_no_runtime() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    let mut rec = Rec::default();
    mixed(false).run_blocking(&mut rec).unwrap();
    assert_eq!(rec.effects, FORWARD);

    let mut rec = Rec::default();
    mixed(true).run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, [&FORWARD[..], &ROLLBACK[..]].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_blocking_from_inside_a_multi_thread_runtime() {
    let mut rec = Rec::default();
    mixed(true).run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, [&FORWARD[..], &ROLLBACK[..]].concat());
}

#[tokio::test(flavor = "current_thread")]
async fn run_blocking_from_inside_a_current_thread_runtime() {
    let mut rec = Rec::default();
    mixed(false).run_blocking(&mut rec).unwrap();
    assert_eq!(rec.effects, FORWARD);
}

#[test]
fn sync_only_saga_runs_blocking_without_any_runtime() {
    let saga = Saga::builder("sync")
        .step(compensable("a"))
        .step(flaky("b", 1, unavailable).retry(exact(2)))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    saga.run_blocking_with(&mut rec, options).unwrap();
    assert_eq!(rec.effects, ["do a", "try b#1", "do b#2"]);
    assert_eq!(clock.sleeps(), [ms(100)]);
}

/// `run_blocking` keeps the records of a sync saga of up to 16 steps on
/// its stack and allocates them for more: both sides of that bound run,
/// report and compensate (with each step's output) the same.
#[test]
fn sync_sagas_at_and_past_the_blocking_records_bound() {
    const NAMES: [&str; 17] = [
        "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13",
        "s14", "s15", "s16",
    ];
    for steps in [15, 16, 17] {
        let build = |fail: bool| {
            let mut builder = Saga::builder("long");
            for &name in &NAMES[..steps - 1] {
                builder = builder.step(compensable(name));
            }
            let last = NAMES[steps - 1];
            builder
                .step(if fail {
                    failing(last, declined)
                } else {
                    compensable(last)
                })
                .build()
                .unwrap()
        };
        let mut rec = Rec::default();
        let report = build(false).run_blocking(&mut rec).unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{steps} steps");
        assert_eq!(report.steps.len(), steps);
        for (step, name) in report.steps.iter().zip(NAMES) {
            assert_eq!(&*step.name, name);
            assert_eq!(step.attempts, 1, "{name} of {steps}");
        }
        assert_eq!(rec.effects.len(), steps);

        let mut rec = Rec::default();
        let error = build(true).run_blocking(&mut rec).unwrap_err();
        let SagaError::Compensated { report, .. } = &error else {
            panic!("{steps} steps: not compensated: {error}");
        };
        assert_eq!(report.steps.len(), steps);
        let forward = NAMES[..steps - 1].iter().map(|name| format!("do {name}"));
        let tried = std::iter::once(format!("try {}#1", NAMES[steps - 1]));
        let undone = NAMES[..steps - 1]
            .iter()
            .rev()
            .map(|name| format!("undo {name} with {name}-out"));
        let expected: Vec<String> = forward.chain(tried).chain(undone).collect();
        assert_eq!(rec.effects, expected, "{steps} steps");
    }
}

#[tokio::test]
async fn sync_only_saga_runs_with_run_too() {
    let saga = Saga::builder("sync")
        .step(compensable("a"))
        .step(failing("b", declined))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    saga.run(&mut rec).await.unwrap_err();
    assert_eq!(rec.effects, ["do a", "try b#1", "undo a with a-out"]);
}

/// The original package's class style: a task with a name, an action, a
/// compensation and metadata, as associated items of one `Task` impl.
struct CreateOrder;

impl Task<Rec> for CreateOrder {
    type Output = u64;
    const NAME: &'static str = "create_order";
    const METADATA: &'static [(&'static str, &'static str)] = &[("owner", "orders-team")];
    const ACTION: TaskFn<Rec, (), u64> = TaskFn::Exclusive(|r, info| {
        r.push(format!("create order (attempt {})", info.attempt()));
        Ok(1001)
    });
    const UNDO: Option<UndoFn<Rec, (), u64>> = Some(UndoFn::Exclusive(|r, order, _| {
        r.push(format!("cancel order {order:?}"));
        Ok(())
    }));
}

struct Validate;

impl Task<Rec> for Validate {
    type Output = ();
    const NAME: &'static str = "validate";
    const ACTION: TaskFn<Rec, (), ()> = TaskFn::Exclusive(|r, _| {
        r.push("validate");
        Ok(())
    });
}

struct ReserveStock;

impl ReserveStock {
    fn reserve<'a>(r: &'a mut Rec, _: &'a StepInfo<'a>) -> TaskFuture<'a, String> {
        TaskFuture::new(async move {
            tokio::task::yield_now().await;
            r.push("reserve stock");
            Ok("res-9".to_owned())
        })
    }

    fn release<'a>(
        r: &'a mut Rec,
        reservation: Option<&'a String>,
        _: &'a StepInfo<'a>,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            r.push(format!("release {reservation:?}"));
            Ok(())
        })
    }
}

impl Task<Rec> for ReserveStock {
    type Output = String;
    const NAME: &'static str = "reserve_stock";
    const ACTION: TaskFn<Rec, (), String> = TaskFn::ExclusiveAsync(Self::reserve);
    const UNDO: Option<UndoFn<Rec, (), String>> = Some(UndoFn::ExclusiveAsync(Self::release));
}

struct ChargePayment;

impl Task<Rec> for ChargePayment {
    type Output = ();
    const NAME: &'static str = "charge_payment";
    const ACTION: TaskFn<Rec, (), ()> = TaskFn::ExclusiveAsync(|r, _| {
        TaskFuture::new(async move {
            r.push("charge payment");
            Err(StepError::new(PaymentError::Declined(5)))
        })
    });
}

#[tokio::test]
async fn sync_and_async_task_types_run_and_compensate() {
    let saga = Saga::builder("tasks")
        .task(CreateOrder)
        .task(Validate)
        .task(ReserveStock)
        .step(Step::from_task(ChargePayment))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run(&mut rec).await.unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "create order (attempt 1)",
            "validate",
            "reserve stock",
            "charge payment",
            r#"release Some("res-9")"#,
            "cancel order Some(1001)",
        ]
    );
    assert!(matches!(err, SagaError::Compensated { ref step, .. } if &**step == "charge_payment"));
    assert_eq!(user_error::<PaymentError>(&err), &PaymentError::Declined(5));
    assert_eq!(
        rows(err.report()),
        [
            row("create_order", "compensated", "applied", 1, 1),
            row("validate", "skipped", "applied", 1, 0),
            row("reserve_stock", "compensated", "applied", 1, 1),
            row("charge_payment", "failed", "not_applied", 1, 0),
        ]
    );

    let shape = saga.shape();
    assert_eq!(
        shape
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.is_async))
            .collect::<Vec<_>>(),
        [
            ("create_order", StepKind::Compensable, false),
            ("validate", StepKind::NoUndo, false),
            ("reserve_stock", StepKind::Compensable, true),
            ("charge_payment", StepKind::NoUndo, true),
        ]
    );
    assert_eq!(
        shape[0].metadata.get("owner").map(String::as_str),
        Some("orders-team")
    );
}

#[test]
fn tasks_with_run_blocking() {
    let saga = Saga::builder("tasks")
        .step(Step::from_task(CreateOrder))
        .task(ReserveStock)
        .build()
        .unwrap();
    let mut rec = Rec::default();
    saga.run_blocking(&mut rec).unwrap();
    assert_eq!(rec.effects, ["create order (attempt 1)", "reserve stock"]);
}

/// A task's options: retries (here of its action), a timeout, the pivot,
/// and dependencies reached through `StepInfo`.
struct Flaky;

impl Task<Rec, u32> for Flaky {
    type Output = ();
    const NAME: &'static str = "flaky";
    const PIVOT: bool = true;
    const RETRY: RetrySpec = RetrySpec {
        retry_if: Some(|_| true),
        ..RetrySpec::attempts(3)
    };
    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));
    const ACTION: TaskFn<Rec, u32, ()> = TaskFn::SharedAsync(|_, info| {
        let attempt = info.attempt();
        let fails = *info.dependencies();
        TaskFuture::new(async move {
            if attempt <= fails {
                return Err(StepError::new(format!("attempt {attempt} failed")));
            }
            Ok(())
        })
    });
}

#[tokio::test]
async fn a_task_says_its_options_as_consts() {
    let saga = Saga::<Rec, u32>::builder("options")
        .task(Flaky)
        .build()
        .unwrap();
    assert_eq!(saga.shape()[0].kind, StepKind::Pivot);
    let mut rec = Rec::default();
    let report = saga.using(&2).run(&mut rec).await.unwrap();
    assert_eq!(report.steps[0].attempts, 3);
    // A pivot that fails cleanly rolls back what came before it (nothing).
    let err = saga.using(&3).run(&mut rec).await.unwrap_err();
    assert!(matches!(err, SagaError::Compensated { .. }), "{err}");
    assert_eq!(err.report().steps[0].attempts, 3);
    // The same task in a saga with another action first: it is still the
    // pivot, and `build` refuses a second one.
    let second = Saga::<Rec, u32>::builder("two")
        .task(Flaky)
        .pivot(Step::new("again", |_: &mut Rec, _: &StepInfo<'_, u32>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap_err();
    assert!(
        matches!(second, saga_core::BuildError::SecondPivot { .. }),
        "{second}"
    );
}

#[test]
fn metadata_set_on_a_step_is_kept() {
    let saga = Saga::builder("meta")
        .step(
            plain("a")
                .metadata("team", "payments")
                .metadata("doc", "https://example.invalid/a"),
        )
        .build()
        .unwrap();
    let shape = saga.shape();
    assert_eq!(shape[0].metadata.len(), 2);
    assert_eq!(shape[0].metadata["team"], "payments");
}

/// An async step really runs to its end before it is marked completed.
#[test]
fn an_async_step_really_runs_to_its_end() {
    let polled = Arc::new(Mutex::new(0_u32));
    let saga = {
        let polled = Arc::clone(&polled);
        Saga::builder("async")
            .step(Step::new_async(
                "slow",
                move |r: &mut Rec, _: &StepInfo<'_>| {
                    let polled = Arc::clone(&polled);
                    Box::pin(async move {
                        // Ten suspension points: the step completes only if the
                        // engine drives the future to its end.
                        for _ in 0..10 {
                            tokio::task::yield_now().await;
                            *polled.lock().unwrap() += 1;
                        }
                        r.push("slow step done");
                        Ok::<_, StepError>(())
                    })
                },
            ))
            .step(plain("after"))
            .build()
            .unwrap()
    };
    let mut rec = Rec::default();
    let report = saga.run_blocking(&mut rec).unwrap();
    assert_eq!(rec.effects, ["slow step done", "do after"]);
    assert_eq!(*polled.lock().unwrap(), 10);
    assert_eq!(report.status, ExecutionStatus::Completed);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut rec = Rec::default();
    runtime.block_on(saga.run(&mut rec)).unwrap();
    assert_eq!(rec.effects, ["slow step done", "do after"]);
    assert_eq!(*polled.lock().unwrap(), 20);
}
