//! What a `Worker` does with no other call in user code, on every store
//! (memory, SQLite and, with the `postgres` feature, PostgreSQL): it hears
//! of this process's new work at once (its poll set to an hour), carries
//! out an operator's resume request made from an engine without the
//! saga's code (as the `saga` CLI makes it), runs the cancellation of an
//! execution whose owner died, and purges finished executions by the
//! engine's retention.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::{Event, EventKind, NewExecution};
use saga_core::{
    Context, ExecutionId, ExecutionStatus, Outcome, Saga, SagaEngine, SagaReport, Step, StepError,
    StepInfo, StepStatus, Worker,
};
use support::durable::{Order, STEPS, Script, saga};
use support::stores::every_store;

/// How long a worker may take before the test gives up (a hang, not a
/// timing check).
const HANG: Duration = Duration::from_secs(60);

/// `charge`, then `ship`, which always refuses; `charge`'s compensation
/// refuses while `broken` is set, which leaves the execution stuck.
fn refund_saga(broken: &Arc<AtomicBool>) -> Saga<Context> {
    let broken = Arc::clone(broken);
    Saga::<Context>::builder("refund")
        .step(
            Step::new("charge", |_: &mut Context, _: &StepInfo<'_>| {
                Ok::<(), StepError>(())
            })
            .undo(move |_: &mut Context, _: Option<&()>, _: &StepInfo<'_>| {
                if broken.load(Ordering::SeqCst) {
                    return Err(StepError::new("the payment service refused the refund"));
                }
                Ok::<(), StepError>(())
            }),
        )
        .step(Step::new("ship", |_: &mut Context, _: &StepInfo<'_>| {
            Err::<(), StepError>(StepError::new("out of stock"))
        }))
        .build()
        .unwrap()
}

/// `refund` version 2, one step: a build that does not register
/// [`refund_saga`]'s definition.
fn refund_v2() -> Saga<Context> {
    Saga::<Context>::builder("refund")
        .version("2")
        .step(Step::new("charge", |_: &mut Context, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// Reads the report until `done` holds of it.
async fn report_until(
    engine: &SagaEngine,
    id: &ExecutionId,
    done: impl Fn(&SagaReport) -> bool,
) -> SagaReport {
    tokio::time::timeout(HANG, async {
        loop {
            let report = engine.report(id).await.unwrap();
            if done(&report) {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker did not get there")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_hears_of_this_process_s_new_work_at_once() {
    for (name, store) in every_store("local_work").await {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        // Its poll would find the work in an hour only.
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_secs(3600))
            .spawn()
            .unwrap();
        for round in 0..3 {
            let id = engine.submit("order", Order::default()).await.unwrap();
            let report = tokio::time::timeout(HANG, engine.wait(&id))
                .await
                .unwrap_or_else(|_| panic!("{name}: round {round} not run"))
                .unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        }
        let stats = worker.shutdown(HANG).await;
        assert_eq!((stats.claimed, stats.finished), (3, 3), "{name}");
    }
}

/// Executions of a version no process registers (dropped in a deploy)
/// wait for no one: the worker, which cannot run them, says so once per
/// version (it said nothing, and `wait` on them never ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_warns_of_executions_of_a_version_no_one_registers() {
    support::logs::install_logger(log::LevelFilter::Warn);
    for (name, store) in every_store("orphans").await {
        // Version 1, by a process that is gone: submitted, never run.
        let v1 = SagaEngine::with_store(Arc::clone(&store));
        v1.register(saga(&Arc::new(Script::default())))
            .await
            .unwrap();
        let first = v1.submit("order", Order::default()).await.unwrap();
        v1.submit("order", Order::default()).await.unwrap();
        let old = store.get(&first).await.unwrap().unwrap().fingerprint;
        drop(v1);
        // Version 2 only, with a step of its own.
        let v2 = SagaEngine::with_store(Arc::clone(&store));
        let new = v2
            .register(
                Saga::<Order>::builder("order")
                    .version("2")
                    .step(Step::new("audit", |_: &mut Order, _: &StepInfo<'_>| {
                        Ok::<(), StepError>(())
                    }))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        let worker = Worker::new(v2.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        // This store's warnings (the stores share the test's logger).
        let mine = || {
            support::logs::entries_where("owner", v2.owner())
                .into_iter()
                .filter(|e| e.field("fingerprint") == Some(old.as_str()))
                .collect::<Vec<_>>()
        };
        let started = std::time::Instant::now();
        let warned = loop {
            let found = mine();
            if !found.is_empty() {
                break found;
            }
            assert!(started.elapsed() < HANG, "{name}: no warning");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(warned[0].level, log::Level::Warn, "{name}");
        let message = &warned[0].message;
        assert!(
            message.starts_with(&format!(
                "2 executions of saga `order` wait for a worker with definition {old}, which this process has not registered (it registers its versions "
            )),
            "{name}: {message}"
        );
        assert!(
            message.ends_with("or give them up with `abandon`, which compensates nothing"),
            "{message}"
        );
        // The declared version beside a fingerprint that has one.
        assert!(
            message.contains(&format!("(it registers its versions {new} (version 2));")),
            "{message}"
        );
        // Once, not at every census.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(mine().len(), 1, "{name}");
        let stats = worker.shutdown(HANG).await;
        assert_eq!(stats.claimed, 0, "{name}: {stats:?}");
    }
}

/// This worker's warnings whose `saga` is `saga` and whose message
/// starts with `start`, waited for (or, with `none_within`, the ones that
/// came in that time).
async fn warnings(
    engine: &SagaEngine,
    saga: &str,
    start: &str,
    none_within: Option<Duration>,
) -> Vec<support::logs::Entry> {
    let found = || {
        support::logs::entries_where("owner", engine.owner())
            .into_iter()
            .filter(|e| e.field("saga") == Some(saga) && e.message.starts_with(start))
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    loop {
        let entries = found();
        match none_within {
            Some(within) if started.elapsed() >= within => return entries,
            None if !entries.is_empty() => return entries,
            None => assert!(started.elapsed() < HANG, "no warning `{start}..`"),
            Some(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The other version, of the same name: `order` version 2, one step.
fn order_v2() -> Saga<Order> {
    Saga::<Order>::builder("order")
        .version("2")
        .step(Step::new("audit", |_: &mut Order, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// Executions of an unregistered version that wait while another
/// process runs that version (busy with one of them) are not orphans:
/// the worker warned of them during an ordinary rolling deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_warn_of_a_version_another_process_runs() {
    support::logs::install_logger(log::LevelFilter::Warn);
    for (name, store) in every_store("busy_version").await {
        // Version 1's process, busy with one execution (its lease held
        // and renewed), two more waiting their turn.
        let script = Arc::new(Script::default());
        *script.hang.lock().unwrap() = Some(support::durable::Point::Step(0));
        let v1 = SagaEngine::with_store(Arc::clone(&store));
        v1.register(saga(&script)).await.unwrap();
        v1.start("order", Order::default()).await.unwrap();
        tokio::time::timeout(HANG, script.hung.notified())
            .await
            .unwrap();
        v1.submit("order", Order::default()).await.unwrap();
        v1.submit("order", Order::default()).await.unwrap();
        let v2 = SagaEngine::with_store(Arc::clone(&store));
        v2.register(order_v2()).await.unwrap();
        // A census every 120 ms: eight of them.
        let worker = Worker::new(v2.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let warned = warnings(&v2, "order", "2 executions", Some(Duration::from_secs(1))).await;
        assert!(warned.is_empty(), "{name}: {warned:?}");
        worker.shutdown(HANG).await;
    }
}

/// A context that decodes as the first build wrote it, and not as the
/// second one reads it (a field added without `#[serde(default)]`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Before {
    guests: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct After {
    guests: u32,
    room: String,
}

/// `booking` with context `C`: the same shape, so the same definition,
/// whatever `C` is.
fn booking<C>() -> Saga<C>
where
    C: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    Saga::<C>::builder("booking")
        .step(Step::new("book", |_: &mut C, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// An execution the worker refused (its context does not decode with
/// this build) waits for no one here: the worker says so again at its
/// census, not only once at the refusal (then nothing, while `saga list`
/// showed it running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reminds_of_the_executions_it_refused() {
    support::logs::install_logger(log::LevelFilter::Warn);
    for (name, store) in every_store("refused").await {
        let before = SagaEngine::with_store(Arc::clone(&store));
        before.register(booking::<Before>()).await.unwrap();
        let id = before.submit("booking", Before::default()).await.unwrap();
        let after = SagaEngine::with_store(Arc::clone(&store));
        after.register(booking::<After>()).await.unwrap();
        let worker = Worker::new(after.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let reminded = warnings(&after, "booking", "1 execution of saga", None).await;
        assert_eq!(reminded[0].level, log::Level::Warn, "{name}");
        assert_eq!(reminded[0].field("execution"), Some(id.as_str()), "{name}");
        assert_eq!(
            reminded[0].message,
            format!(
                "1 execution of saga `booking` that this worker refused (its log or context does not fit this build; the error was logged at the refusal) waits unfinished with no owner, `{id}` first: a process of the build that started it can carry it on; else make the types accept what is stored (serde `default`, `alias`) and restart this process, or give it up with `abandon`, which compensates nothing"
            ),
            "{name}"
        );
        // The refusal itself says what to do, the previous build included.
        let errors: Vec<_> = support::logs::entries_where("execution", id.as_str())
            .into_iter()
            .filter(|e| e.message == "worker refused an execution")
            .collect();
        let error = errors[0].field("error").unwrap_or_default();
        assert!(
            error.contains("carry it on with the build that started it"),
            "{name}: {error}"
        );
        let stats = worker.shutdown(HANG).await;
        assert_eq!(stats.refused, 1, "{name}: {stats:?}");
    }
}

/// An operator's resume request of a version no process here registers
/// waits for no one: the worker says so (the request was accepted, and
/// nothing ever said it would not be carried out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_warns_of_resume_requests_of_a_version_no_one_registers() {
    support::logs::install_logger(log::LevelFilter::Warn);
    for (name, store) in every_store("orphan_resume").await {
        let broken = Arc::new(AtomicBool::new(true));
        let v1 = SagaEngine::with_store(Arc::clone(&store));
        let old = v1.register(refund_saga(&broken)).await.unwrap();
        let id = v1.start("refund", Context::new()).await.unwrap();
        let stuck = v1.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(stuck.status, ExecutionStatus::Stuck, "{name}");
        let cli = SagaEngine::with_store(Arc::clone(&store));
        cli.request_resume(&id).await.unwrap();
        // The next build registers another version only.
        let v2 = SagaEngine::with_store(Arc::clone(&store));
        v2.register(refund_v2()).await.unwrap();
        let worker = Worker::new(v2.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let warned = warnings(&v2, "refund", "1 resume request", None).await;
        assert_eq!(
            warned[0].message,
            format!(
                "1 resume request of saga `refund` waits for a worker with definition {old}, which this process has not registered; if no other process runs that version, deploy a build that registers it beside yours, or give the execution up with `abandon`, which compensates nothing"
            ),
            "{name}"
        );
        let stats = worker.shutdown(HANG).await;
        assert_eq!((stats.resumed, stats.claimed), (0, 0), "{name}: {stats:?}");
    }
}

/// A handler's `start_with_id` racing the worker for a submitted
/// execution: one of them runs it, and the worker counts a claim only
/// for a run it started (it counted the claims it gave back too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_counts_only_the_claims_it_ran() {
    for (name, store) in every_store("claim_count").await {
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine
            .register(saga(&Arc::new(Script::default())))
            .await
            .unwrap();
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(1))
            .spawn()
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..60 {
            let id = format!("race-{i}");
            engine
                .submit_with_id("order", id.as_str(), Order::default())
                .await
                .unwrap();
            // Already claimed by the worker, or claimed here: either way
            // it runs once.
            let _ = engine
                .start_with_id("order", id.as_str(), Order::default())
                .await;
            ids.push(ExecutionId::from(id.as_str()));
        }
        for id in &ids {
            let report = tokio::time::timeout(HANG, engine.wait(id))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        }
        let stats = worker.shutdown(HANG).await;
        assert_eq!(
            stats.claimed,
            stats.finished + stats.interrupted + stats.refused + stats.released,
            "{name}: {stats:?}"
        );
    }
}

/// `wait` on a stuck execution whose resume an operator requested waits
/// for the resumed run's end (it answered `stuck` at once, as if nothing
/// were pending), and answers that end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_a_requested_resume_to_its_end() {
    for (name, store) in every_store("wait_resume").await {
        let broken = Arc::new(AtomicBool::new(true));
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(refund_saga(&broken)).await.unwrap();
        let id = engine.start("refund", Context::new()).await.unwrap();
        let stuck = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(stuck.status, ExecutionStatus::Stuck, "{name}");
        broken.store(false, Ordering::SeqCst);
        let cli = SagaEngine::with_store(Arc::clone(&store));
        cli.request_resume(&id).await.unwrap();
        // No worker runs yet: the request is pending, and so is the wait.
        let waiting = tokio::spawn({
            let (cli, id) = (cli.clone(), id.clone());
            async move { cli.wait(&id).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "{name}: wait answered while the resume was pending: {:?}",
            waiting.await.unwrap().map(|r| r.status)
        );
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let report = tokio::time::timeout(HANG, waiting)
            .await
            .unwrap_or_else(|_| panic!("{name}: the wait did not end"))
            .unwrap()
            .or_else(support::ended)
            .unwrap();
        let steps: Vec<_> = report
            .steps
            .iter()
            .map(|s| (&*s.name, s.status, s.outcome))
            .collect();
        assert_eq!(
            (report.status, steps),
            (
                ExecutionStatus::Compensated,
                vec![
                    ("charge", StepStatus::Compensated, Outcome::Applied),
                    ("ship", StepStatus::Failed, Outcome::NotApplied),
                ]
            ),
            "{name}"
        );
        let stats = worker.shutdown(HANG).await;
        assert_eq!(stats.resumed, 1, "{name}: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_carries_out_a_resume_requested_from_the_cli() {
    for (name, store) in every_store("cli_resume").await {
        let broken = Arc::new(AtomicBool::new(true));
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(refund_saga(&broken)).await.unwrap();
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let id = engine.start("refund", Context::new()).await.unwrap();
        let stuck = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(stuck.status, ExecutionStatus::Stuck, "{name}");
        // The operator fixes the payment service, then asks from the CLI:
        // an engine of its own, without the saga's code, and no recover.
        broken.store(false, Ordering::SeqCst);
        let cli = SagaEngine::with_store(Arc::clone(&store));
        cli.request_resume(&id).await.unwrap();
        // Resumed (`compensating`), then ended.
        let report = report_until(&cli, &id, |r| {
            r.status.is_finished() && r.status != ExecutionStatus::Stuck
        })
        .await;
        assert_eq!(report.status, ExecutionStatus::Compensated, "{name}");
        let steps: Vec<_> = report
            .steps
            .iter()
            .map(|s| (&*s.name, s.status, s.outcome, s.attempts))
            .collect();
        assert_eq!(
            steps,
            [
                ("charge", StepStatus::Compensated, Outcome::Applied, 1),
                ("ship", StepStatus::Failed, Outcome::NotApplied, 1),
            ],
            "{name}"
        );
        assert_eq!(
            report.steps[1].last_error.as_deref(),
            Some("out of stock"),
            "{name}"
        );
        let stats = worker.shutdown(HANG).await;
        assert_eq!(stats.resumed, 1, "{name}: {stats:?}");
        assert_eq!(stats.refused, 0, "{name}: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_purges_by_the_engine_s_retention() {
    for (name, store) in every_store("purge").await {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store)).with_retention(Duration::ZERO);
        engine.register(saga(&script)).await.unwrap();
        let broken = Arc::new(AtomicBool::new(true));
        engine.register(refund_saga(&broken)).await.unwrap();
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(20))
            .with_purge_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let done = engine.start("order", Order::default()).await.unwrap();
        let stuck = engine.start("refund", Context::new()).await.unwrap();
        assert_eq!(
            engine
                .wait(&stuck)
                .await
                .or_else(support::ended)
                .unwrap()
                .status,
            ExecutionStatus::Stuck
        );
        // Gone once it has completed and a purge came by.
        tokio::time::timeout(HANG, async {
            while store.get(&done).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: never purged"));
        assert_eq!(script.calls().len(), STEPS, "{name}: it completed");
        let stats = worker.shutdown(HANG).await;
        assert_eq!(stats.purged, 1, "{name}: {stats:?}");
        // A stuck execution waits for an operator, however old.
        assert!(store.get(&stuck).await.unwrap().is_some(), "{name}");
    }
}

/// The owner of an execution died inside its second step (its lease
/// left to expire); an operator cancels it (no process runs it); a worker
/// carries out the cancellation: the steps that may have taken effect are
/// compensated, and it ends cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cancels_an_execution_whose_owner_died() {
    for (name, store) in every_store("orphan_cancel").await {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        let fingerprint = engine.register(saga(&script)).await.unwrap();
        // The log the dead owner left: `s0` done, `s1` started.
        let step = |seq, kind, step: u32| {
            let mut event = Event::new(seq, kind);
            event.step = Some(step);
            event.attempt = 1;
            event
        };
        let mut s0 = step(2, EventKind::StepSucceeded, 0);
        s0.output = Some("0".to_owned());
        let id = ExecutionId::new("orphan");
        store
            .create(
                NewExecution {
                    id: id.clone(),
                    saga: "order".to_owned(),
                    fingerprint,
                    context: serde_json::to_string(&Order::default()).unwrap(),
                    events: vec![
                        step(1, EventKind::StepStarted, 0),
                        s0,
                        step(3, EventKind::StepStarted, 1),
                    ],
                },
                "dead-owner",
                Duration::from_millis(50),
            )
            .await
            .unwrap();
        let operator = SagaEngine::with_store(Arc::clone(&store));
        operator.cancel(&id).await.unwrap();
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let report = tokio::time::timeout(HANG, engine.wait(&id))
            .await
            .unwrap_or_else(|_| panic!("{name}: not cancelled"))
            .or_else(support::ended)
            .unwrap();
        assert_eq!(report.status, ExecutionStatus::Cancelled, "{name}");
        // `s1` may have taken effect before its owner died: it is
        // compensated with `s0`. (Its outcome is left out: the rebuilt
        // report reads the cancelled re-run's start as a step stopped
        // before it ran, and says `not_started`.)
        let steps: Vec<_> = report
            .steps
            .iter()
            .map(|s| (&*s.name, s.status, s.compensation_attempts))
            .collect();
        assert_eq!(
            steps,
            [
                ("s0", StepStatus::Compensated, 1),
                ("s1", StepStatus::Compensated, 1),
                ("s2", StepStatus::Pending, 0),
                ("s3", StepStatus::Pending, 0),
                ("s4", StepStatus::Pending, 0),
            ],
            "{name}: {report:?}"
        );
        let undone: Vec<String> = script
            .calls()
            .into_iter()
            .map(|(what, _)| what)
            .filter(|what| what.starts_with("undo"))
            .collect();
        assert_eq!(undone, ["undo s1 None", "undo s0 Some(0)"], "{name}");
        assert_eq!(report.steps.len(), STEPS);
        worker.shutdown(HANG).await;
    }
}

/// Intervals too long for the clock mean "never", not a panic of the
/// worker's task: the work signal still runs what is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_endless_intervals_still_runs_signalled_work() {
    let script = Arc::new(Script::default());
    let engine = SagaEngine::new(saga_core::store::MemoryStore::new());
    engine.register(saga(&script)).await.unwrap();
    let worker = Worker::new(engine.clone())
        .with_poll_interval(Duration::MAX)
        .with_purge_interval(Duration::MAX)
        .spawn()
        .unwrap();
    let id = engine.submit("order", Order::default()).await.unwrap();
    let report = tokio::time::timeout(HANG, engine.wait(&id))
        .await
        .expect("the worker did not run it")
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    let stats = worker.shutdown(HANG).await;
    assert_eq!((stats.claimed, stats.finished), (1, 1));
}

/// `recover` refuses the same execution, and its record names the saga
/// as the worker's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_s_refusal_names_the_saga() {
    support::logs::install_logger(log::LevelFilter::Warn);
    for (name, store) in every_store("recovery_refused").await {
        let before = SagaEngine::with_store(Arc::clone(&store));
        before.register(booking::<Before>()).await.unwrap();
        let id = before.submit("booking", Before::default()).await.unwrap();
        let after = SagaEngine::with_store(Arc::clone(&store));
        after.register(booking::<After>()).await.unwrap();
        let recovery = after.recover().await.unwrap();
        assert_eq!(recovery.refused.len(), 1, "{name}");
        let refused: Vec<_> = support::logs::entries_where("execution", id.as_str())
            .into_iter()
            .filter(|e| e.message == "recovery refused an execution")
            .collect();
        assert_eq!(
            refused[0].field("saga"),
            Some("booking"),
            "{name}: {refused:?}"
        );
    }
}

/// `hotel` with context `C`: `book`, whose compensation always fails,
/// then `pay`, which always fails: an execution ends stuck in its
/// rollback. The same definition whatever `C` is.
fn stuck_hotel<C>() -> Saga<C>
where
    C: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    Saga::<C>::builder("hotel")
        .step(
            Step::new(
                "book",
                |_: &mut C, _: &StepInfo<'_>| Ok::<(), StepError>(()),
            )
            .undo(|_: &mut C, _: Option<&()>, _: &StepInfo<'_>| {
                Err::<(), StepError>(StepError::new("the hotel kept the deposit").permanent())
            }),
        )
        .step(Step::new("pay", |_: &mut C, _: &StepInfo<'_>| {
            Err::<(), StepError>(StepError::new("card declined").permanent())
        }))
        .build()
        .unwrap()
}

/// An operator's resume request the worker refused (the stuck
/// execution's context does not decode with this build) waits for no one
/// here either: the worker reminds of it as of a refused running one. (It
/// said so once, at the refusal: the execution is stuck, not running, and
/// the request is of a definition this worker registers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reminds_of_the_resume_requests_it_refused() {
    support::logs::install_logger(log::LevelFilter::Warn);
    for (name, store) in every_store("refused_request").await {
        let before = SagaEngine::with_store(Arc::clone(&store));
        before.register(stuck_hotel::<Before>()).await.unwrap();
        let id = before.start("hotel", Before::default()).await.unwrap();
        let stuck = before.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(stuck.status, ExecutionStatus::Stuck, "{name}");
        before.request_resume(&id).await.unwrap();
        let after = SagaEngine::with_store(Arc::clone(&store));
        after.register(stuck_hotel::<After>()).await.unwrap();
        let worker = Worker::new(after.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let reminded = warnings(&after, "hotel", "1 execution of saga", None).await;
        assert_eq!(reminded[0].field("execution"), Some(id.as_str()), "{name}");
        let stats = worker.shutdown(HANG).await;
        assert_eq!(stats.refused, 1, "{name}: {stats:?}");
    }
}

/// A resume request of a version another process runs (busy: one of its
/// executions held) is that process's to carry out once it has room, as
/// its waiting executions are: no warning that invites `abandon` during an
/// ordinary rolling deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_warn_of_resume_requests_of_a_version_another_process_runs() {
    support::logs::install_logger(log::LevelFilter::Warn);
    for (name, store) in every_store("busy_version_request").await {
        let broken = Arc::new(AtomicBool::new(true));
        let v1 = SagaEngine::with_store(Arc::clone(&store));
        v1.register(refund_saga(&broken)).await.unwrap();
        let id = v1.start("refund", Context::new()).await.unwrap();
        let stuck = v1.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(stuck.status, ExecutionStatus::Stuck, "{name}");
        v1.request_resume(&id).await.unwrap();
        // Version 1's process, busy with another execution: its lease
        // held.
        let busy = v1.submit("refund", Context::new()).await.unwrap();
        let held = store
            .claim(&busy, "version-1", Duration::from_secs(600))
            .await
            .unwrap();
        assert!(held.is_some(), "{name}");
        let v2 = SagaEngine::with_store(Arc::clone(&store));
        v2.register(refund_v2()).await.unwrap();
        // A census every 120 ms: eight of them.
        let worker = Worker::new(v2.clone())
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let warned = warnings(
            &v2,
            "refund",
            "1 resume request",
            Some(Duration::from_secs(1)),
        )
        .await;
        assert!(warned.is_empty(), "{name}: {warned:?}");
        worker.shutdown(HANG).await;
    }
}
