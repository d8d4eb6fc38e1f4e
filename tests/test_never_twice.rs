//! One live run per execution, by construction: an owner cannot claim
//! again a lease it holds, and one engine never runs one execution twice,
//! whichever of its entry points race (two recoveries, a worker next to a
//! recovery loop, a start next to one, a resume next to one). Every race
//! runs on every store, through a store that answers 0, 1 and 10 ms late
//! (`DelayedStore`): the latency of a network store is what makes these
//! races show.
//!
//! Each race counts what a user would pay for: invocations per idempotency
//! key (a step run twice), launches per execution (as the recoveries report
//! them), and `wait` errors for executions that completed. All must be at
//! most one, one and zero.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::store::{Created, NewExecution, SagaStore};
use saga_core::testkit::DelayedStore;
use saga_core::{
    ExecutionId, ExecutionStatus, RetryPolicy, Saga, SagaEngine, Step, StepError, StepInfo, Worker,
};
use support::durable::{Order, STEPS, Script, saga};
use support::stores::every_store;

/// How many executions each race runs: enough for a race to show in
/// every run of the test, few enough for a test of a few seconds.
const EXECUTIONS: usize = 12;

/// How late the wrapped stores answer.
const DELAYS: [u64; 3] = [0, 1, 10];

/// Every store, fresh, behind a [`DelayedStore`] for each delay; the label
/// names both.
async fn stores(test: &str) -> Vec<(String, Arc<dyn SagaStore>)> {
    let mut all = Vec::new();
    for ms in DELAYS {
        for (name, store) in every_store(&format!("{test}{ms}")).await {
            let delayed = DelayedStore::shared(store, Duration::from_millis(ms));
            all.push((
                format!("{name} +{ms}ms"),
                Arc::new(delayed) as Arc<dyn SagaStore>,
            ));
        }
    }
    all
}

/// What the steps did, per idempotency key and per execution.
struct Tally {
    /// Keys invoked more than once, with their counts.
    repeated: Vec<(String, usize)>,
    /// Executions whose steps were invoked other than `STEPS` times.
    uneven: Vec<(String, usize)>,
}

fn tally(script: &Script) -> Tally {
    let mut per_key: HashMap<String, usize> = HashMap::new();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for (what, key) in script.calls() {
        assert!(what.starts_with("do "), "no compensation runs here: {what}");
        let id = key.split('/').next().unwrap_or_default().to_owned();
        *per_key.entry(key).or_default() += 1;
        *per_id.entry(id).or_default() += 1;
    }
    let mut repeated: Vec<_> = per_key.into_iter().filter(|(_, n)| *n > 1).collect();
    repeated.sort();
    let mut uneven: Vec<_> = per_id.into_iter().filter(|(_, n)| *n != STEPS).collect();
    uneven.sort();
    Tally { repeated, uneven }
}

/// Submits `EXECUTIONS` executions with an engine that then goes away: a
/// free lease each, as a dead owner leaves them.
async fn submitted(store: &Arc<dyn SagaStore>, script: &Arc<Script>) -> Vec<ExecutionId> {
    let submitter = SagaEngine::with_store(Arc::clone(store));
    submitter.register(saga(script)).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..EXECUTIONS {
        ids.push(submitter.submit("order", Order::default()).await.unwrap());
    }
    ids
}

/// Waits for each of `ids` with `engine`: the executions whose `wait`
/// failed, with the error, and checks every one completed in the store.
async fn wait_all(engine: &SagaEngine, ids: &[ExecutionId]) -> Vec<(ExecutionId, String)> {
    let mut errors = Vec::new();
    for id in ids {
        let waited = tokio::time::timeout(Duration::from_secs(60), engine.wait(id))
            .await
            .expect("an execution never finished");
        match waited {
            Ok(report) => assert_eq!(report.status, ExecutionStatus::Completed, "{id}"),
            Err(error) => errors.push((id.clone(), error.to_string())),
        }
    }
    // Once every run is over, each execution completed, whatever `wait`
    // said of it.
    for id in ids {
        let mut record = engine.store().get(id).await.unwrap().unwrap();
        for _ in 0..600 {
            if record.status.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            record = engine.store().get(id).await.unwrap().unwrap();
        }
        assert_eq!(record.status, ExecutionStatus::Completed, "{id}");
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cannot_claim_again_a_lease_it_holds() {
    for (name, store) in every_store("reclaim").await {
        let new = NewExecution {
            id: ExecutionId::new("x"),
            saga: "order".into(),
            fingerprint: "f".into(),
            context: "{}".into(),
            events: Vec::new(),
        };
        let ttl = Duration::from_secs(60);
        let Created::New(held) = store.create(new, "a", ttl).await.unwrap() else {
            panic!("{name}: not created")
        };
        // The holder's run goes on: a second claim by the same owner would
        // start a second run of it.
        let again = store.claim(&ExecutionId::new("x"), "a", ttl).await.unwrap();
        assert_eq!(again, None, "{name}: claimed a lease its owner holds");
        // Its lease still stands.
        store.renew(&ExecutionId::new("x"), &held).await.unwrap();
        // Once given up, it can be claimed, by its old owner too.
        store.release(&ExecutionId::new("x"), &held).await.unwrap();
        let taken = store.claim(&ExecutionId::new("x"), "a", ttl).await.unwrap();
        assert!(
            taken.is_some_and(|l| l.token > held.token),
            "{name}: a free lease was not claimed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_recoveries_at_once_launch_each_execution_once() {
    for (name, store) in stores("recover2").await {
        let script = Arc::new(Script::default());
        let ids = submitted(&store, &script).await;
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        let (a, b) = tokio::join!(engine.recover(), engine.recover());
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut launches: HashMap<&ExecutionId, usize> = HashMap::new();
        for id in a.resumed.iter().chain(&b.resumed) {
            *launches.entry(id).or_default() += 1;
        }
        let twice: Vec<_> = launches.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{name}: launched twice: {twice:?}");
        assert_eq!(launches.len(), EXECUTIONS, "{name}: {a:?} {b:?}");
        let errors = wait_all(&engine, &ids).await;
        assert!(errors.is_empty(), "{name}: wait failed: {errors:?}");
        let tally = tally(&script);
        assert!(tally.repeated.is_empty(), "{name}: {:?}", tally.repeated);
        assert!(tally.uneven.is_empty(), "{name}: {:?}", tally.uneven);
    }
}

/// Runs `engine.recover()` in a loop until `stop`, as a user following
/// the old advice did next to their other calls.
fn recover_loop(engine: &SagaEngine, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let recovery = engine.recover().await.unwrap();
            assert!(recovery.refused.is_empty(), "{:?}", recovery.refused);
            tokio::task::yield_now().await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_next_to_a_recovery_loop_runs_each_execution_once() {
    for (name, store) in stores("worker").await {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let looping = recover_loop(&engine, &stop);
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(10))
            .spawn()
            .unwrap();
        let ids = submitted(&store, &script).await;
        let errors = wait_all(&engine, &ids).await;
        stop.store(true, Ordering::SeqCst);
        looping.await.unwrap();
        let stats = worker.shutdown(Duration::from_secs(5)).await;
        assert!(errors.is_empty(), "{name}: wait failed: {errors:?}");
        assert_eq!(stats.interrupted, 0, "{name}: {stats:?}");
        let tally = tally(&script);
        assert!(tally.repeated.is_empty(), "{name}: {:?}", tally.repeated);
        assert!(tally.uneven.is_empty(), "{name}: {:?}", tally.uneven);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_next_to_a_recovery_loop_runs_once_and_its_wait_succeeds() {
    for (name, store) in stores("start").await {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let looping = recover_loop(&engine, &stop);
        let mut ids = Vec::new();
        for i in 0..EXECUTIONS {
            let id = engine
                .start_with_id("order", format!("order-{i}"), Order::default())
                .await
                .unwrap();
            ids.push(id);
        }
        let errors = wait_all(&engine, &ids).await;
        stop.store(true, Ordering::SeqCst);
        looping.await.unwrap();
        assert!(errors.is_empty(), "{name}: wait failed: {errors:?}");
        let tally = tally(&script);
        assert!(tally.repeated.is_empty(), "{name}: {:?}", tally.repeated);
        assert!(tally.uneven.is_empty(), "{name}: {:?}", tally.uneven);
    }
}

/// Reserves (noting each invocation and its key in `ledger`), then `pay`
/// fails; reserve's compensation (noted too) fails while `up` is false:
/// stuck rolling back.
fn fragile(up: &Arc<AtomicBool>, ledger: &Arc<Mutex<Vec<String>>>) -> Saga<Order> {
    let (up, did, undid) = (Arc::clone(up), Arc::clone(ledger), Arc::clone(ledger));
    Saga::<Order>::builder("fragile")
        .undo_retry(RetryPolicy::attempts(1))
        .step(
            Step::new("reserve", move |_: &mut Order, info: &StepInfo<'_>| {
                did.lock()
                    .unwrap()
                    .push(format!("do {}", info.idempotency_key()));
                Ok::<_, StepError>(())
            })
            .undo(move |_: &mut Order, _: Option<&()>, info: &StepInfo<'_>| {
                undid
                    .lock()
                    .unwrap()
                    .push(format!("undo {}", info.idempotency_key()));
                if !up.load(Ordering::SeqCst) {
                    return Err(StepError::new("stock service down"));
                }
                Ok(())
            }),
        )
        .step(Step::new("pay", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("card declined"))
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_next_to_a_recovery_loop_runs_once_and_its_wait_succeeds() {
    for (name, store) in stores("resume").await {
        let up = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Vec::new()));
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(fragile(&up, &ledger)).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..EXECUTIONS {
            let id = engine.start("fragile", Order::default()).await.unwrap();
            let report = engine.wait(&id).await.or_else(support::ended).unwrap();
            assert_eq!(report.status, ExecutionStatus::Stuck, "{name}");
            ids.push(id);
        }
        up.store(true, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let loops = [recover_loop(&engine, &stop), recover_loop(&engine, &stop)];
        // Every resume at once: the recoveries' listings fall between a
        // resume's commit and its run's start more often.
        let mut resumes = tokio::task::JoinSet::new();
        for id in &ids {
            let (engine, id) = (engine.clone(), id.clone());
            resumes.spawn(async move { engine.resume(&id).await });
        }
        while let Some(resumed) = resumes.join_next().await {
            resumed.unwrap().unwrap();
        }
        let mut errors = Vec::new();
        for id in &ids {
            match engine.wait(id).await {
                Ok(report) => panic!("{name}: completed, expected compensated: {report:?}"),
                Err(saga_core::WaitError::Saga(ended)) => {
                    assert_eq!(
                        ended.report().status,
                        ExecutionStatus::Compensated,
                        "{name}"
                    );
                }
                Err(error) => errors.push((id.clone(), error.to_string())),
            }
        }
        stop.store(true, Ordering::SeqCst);
        for looping in loops {
            looping.await.unwrap();
        }
        assert!(errors.is_empty(), "{name}: wait failed: {errors:?}");
        // Each step ran once; each compensation once before the resume
        // (failing) and once after.
        let mut counts: HashMap<String, usize> = HashMap::new();
        for call in ledger.lock().unwrap().iter() {
            *counts.entry(call.clone()).or_default() += 1;
        }
        let wrong: Vec<_> = counts
            .iter()
            .filter(|(call, n)| **n != if call.starts_with("undo") { 2 } else { 1 })
            .collect();
        assert!(wrong.is_empty(), "{name}: {wrong:?}");
        assert_eq!(counts.len(), 2 * EXECUTIONS, "{name}");
    }
}
