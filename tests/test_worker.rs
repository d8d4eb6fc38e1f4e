//! The worker on the embedded stores (no PostgreSQL needed): it runs what
//! another engine submits (hearing of it by the store's work signal, or
//! its poll), leaves executions of definitions it lacks alone, and a
//! graceful shutdown releases what it could not finish, for another worker
//! to carry on; a store that says it is misconfigured is an error at each
//! attempt, and the worker carries on once it is fixed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::{MemoryStore, SagaStore, SqliteStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{Context, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo, Worker};
use support::logs;

fn saga(name: &str, steps: usize, calls: &Arc<AtomicUsize>, pause: Duration) -> Saga<Context> {
    let mut builder = Saga::<Context>::builder(name.to_owned());
    for i in 0..steps {
        let calls = Arc::clone(calls);
        builder = builder.step(Step::new_async(
            format!("s{i}"),
            move |_: &mut Context, _: &StepInfo<'_>| {
                calls.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    tokio::time::sleep(pause).await;
                    Ok::<(), StepError>(())
                })
            },
        ));
    }
    builder.build().unwrap()
}

/// Waits for a submitted execution to end, whoever runs it: `wait` waits
/// for one that no one has run yet.
async fn finished(engine: &SagaEngine, id: &saga_core::ExecutionId) -> saga_core::SagaReport {
    tokio::time::timeout(Duration::from_secs(60), engine.wait(id))
        .await
        .expect("no worker ran the execution")
        .unwrap()
}

fn stores(test: &str) -> Vec<(&'static str, Arc<dyn SagaStore>)> {
    let dir = std::env::temp_dir().join(format!("saga-worker-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    vec![
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn SagaStore>),
        (
            "sqlite",
            Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_submitted_executions_of_the_definitions_it_has() {
    for (name, store) in stores("runs") {
        let calls = Arc::new(AtomicUsize::new(0));
        let submitter = SagaEngine::with_store(Arc::clone(&store));
        submitter
            .register(saga("a", 2, &calls, Duration::ZERO))
            .await
            .unwrap();
        submitter
            .register(saga("b", 1, &calls, Duration::ZERO))
            .await
            .unwrap();
        let engine = SagaEngine::with_store(Arc::clone(&store));
        // This worker has `a` only.
        engine
            .register(saga("a", 2, &calls, Duration::ZERO))
            .await
            .unwrap();
        let worker = Worker::new(engine)
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(submitter.submit("a", Context::new()).await.unwrap());
        }
        let other = submitter.submit("b", Context::new()).await.unwrap();
        for id in &ids {
            let report = finished(&submitter, id).await;
            assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        }
        let stats = worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!((stats.claimed, stats.finished), (5, 5), "{name}");
        assert_eq!(calls.load(Ordering::SeqCst), 10, "{name}");
        let record = store.get(&other).await.unwrap().unwrap();
        assert_eq!(
            record.status,
            ExecutionStatus::Running,
            "{name}: `b` was left alone"
        );
        assert_eq!(record.owner, None, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_releases_unfinished_runs_for_another_worker() {
    for (name, store) in stores("shutdown") {
        let calls = Arc::new(AtomicUsize::new(0));
        let slow = || saga("slow", 3, &calls, Duration::from_secs(1));
        let submitter = SagaEngine::with_store(Arc::clone(&store));
        submitter.register(slow()).await.unwrap();
        let first = SagaEngine::with_store(Arc::clone(&store));
        first.register(slow()).await.unwrap();
        let worker = Worker::new(first)
            .with_concurrency(2)
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(submitter.submit("slow", Context::new()).await.unwrap());
        }
        while worker.stats().claimed < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // No grace: both runs are mid-step; they are stopped and released.
        let stats = worker.shutdown(Duration::ZERO).await;
        assert_eq!(stats.released, 2, "{name}: {stats:?}");
        for id in &ids {
            let record = store.get(id).await.unwrap().unwrap();
            assert_eq!(record.owner, None, "{name}: every lease is free");
        }
        // Another worker (another process, as far as the store knows)
        // carries them on at once, not after a lease's expiry.
        let second =
            SagaEngine::with_store(Arc::clone(&store)).with_lease_ttl(Duration::from_secs(3600));
        second.register(slow()).await.unwrap();
        let worker = Worker::new(second)
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        for id in &ids {
            let report = submitter.wait(id).await.or_else(support::ended).unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        }
        let stats = worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(stats.finished, 4, "{name}: {stats:?}");
    }
}

/// The store's message for a privilege its user lacks, as the PostgreSQL
/// store words it.
const MISSING: &str = "claiming work was refused: the user of the URL lacks a privilege the store needs (UPDATE on its tables)";

/// Before: a store that said it was misconfigured (a database missing, a
/// privilege lacking) was retried as an outage, with a warning per
/// attempt, the same as a database restarting. Now each attempt is an
/// error record carrying the store's message, for an operator to notice;
/// the worker still tries again with backoff, and carries on by itself
/// once the configuration is fixed (a `GRANT`, no restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_store_is_an_error_at_each_attempt_until_fixed() {
    logs::install_logger(log::LevelFilter::Info);
    for (name, store) in stores("misconfigured") {
        let broken = Arc::new(AtomicBool::new(true));
        let store = DelayedStore::shared(store, Duration::ZERO).before_call({
            let broken = Arc::clone(&broken);
            move |call| {
                let refused = matches!(call.op, StoreOp::ClaimNext | StoreOp::Purge);
                if refused && broken.load(Ordering::SeqCst) {
                    return Err(StoreError::Misconfigured {
                        store: "the test store".into(),
                        problem: MISSING.into(),
                        source: None,
                    });
                }
                Ok(())
            }
        });
        let engine = SagaEngine::new(store);
        let calls = Arc::new(AtomicUsize::new(0));
        engine
            .register(saga("granted", 1, &calls, Duration::ZERO))
            .await
            .unwrap();
        let id = engine.submit("granted", Context::new()).await.unwrap();
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(100))
            .spawn()
            .unwrap();
        let ours = || logs::entries_where("owner", engine.owner());
        let refusals = || {
            ours()
                .into_iter()
                .filter(|e| e.message.starts_with("worker cannot claim work"))
                .collect::<Vec<_>>()
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            while refusals().len() < 3
                || !ours().iter().any(|e| e.message == "worker could not purge")
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: {:?}", ours()));
        for record in refusals().iter().chain(
            ours()
                .iter()
                .filter(|e| e.message == "worker could not purge"),
        ) {
            assert_eq!(record.level, log::Level::Error, "{name}: {record:?}");
            assert!(
                record.field("error").unwrap_or_default().contains(MISSING),
                "{name}: {record:?}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{name}");
        // The privilege is granted: the worker carries on by itself.
        broken.store(false, Ordering::SeqCst);
        let report = finished(&engine, &id).await;
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        let stats = worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(stats.finished, 1, "{name}: {stats:?}");
    }
}

/// A run waiting out a retry's backoff holds its place in the worker's
/// concurrency (documented at `Worker::with_concurrency`): with one place,
/// a second execution is claimed only once the first has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_backing_off_holds_its_place_in_the_concurrency() {
    for (name, store) in stores("backoff-place") {
        let failed = Arc::new(AtomicBool::new(false));
        let flaky = |failed: &Arc<AtomicBool>| {
            let failed = Arc::clone(failed);
            Saga::<Context>::builder("flaky")
                .step(
                    Step::new("call", move |_: &mut Context, _: &StepInfo<'_>| {
                        if failed.swap(true, Ordering::SeqCst) {
                            Ok(())
                        } else {
                            Err(StepError::new("provider down"))
                        }
                    })
                    .retry(
                        saga_core::RetryPolicy::attempts(2)
                            .with_backoff(Duration::from_millis(1500))
                            .with_jitter(0.0),
                    ),
                )
                .build()
                .unwrap()
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let submitter = SagaEngine::with_store(Arc::clone(&store));
        submitter.register(flaky(&failed)).await.unwrap();
        submitter
            .register(saga("quick", 1, &calls, Duration::ZERO))
            .await
            .unwrap();
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(flaky(&failed)).await.unwrap();
        engine
            .register(saga("quick", 1, &calls, Duration::ZERO))
            .await
            .unwrap();
        let first = submitter.submit("flaky", Context::new()).await.unwrap();
        let worker = Worker::new(engine)
            .with_concurrency(1)
            .with_poll_interval(Duration::from_millis(20))
            .spawn()
            .unwrap();
        while !failed.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = submitter.submit("quick", Context::new()).await.unwrap();
        // Well within the 1.5 s backoff.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = store.get(&second).await.unwrap().unwrap();
        assert_eq!(
            (
                waiting.owner,
                calls.load(Ordering::SeqCst),
                worker.stats().claimed
            ),
            (None, 0, 1),
            "{name}: the second execution waits for the place"
        );
        for id in [&first, &second] {
            let report = finished(&submitter, id).await;
            assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        }
        let stats = worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!((stats.claimed, stats.finished), (2, 2), "{name}");
    }
}

/// A store that takes a second or more to answer a claim (a locked file,
/// an overloaded server) is told, once per slow claim: before, a 4 s lock
/// of the SQLite file left no record at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_claim_is_logged() {
    logs::install_logger(log::LevelFilter::Info);
    let slow_once = Arc::new(AtomicBool::new(true));
    let slow = Arc::clone(&slow_once);
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call(move |call| {
        if call.op == StoreOp::ClaimNext && slow.swap(false, Ordering::SeqCst) {
            // Blocks this worker thread, as a locked file blocks a store.
            std::thread::sleep(Duration::from_millis(1200));
        }
        Ok(())
    });
    let engine = SagaEngine::new(store);
    let owner = engine.owner().to_owned();
    let worker = Worker::new(engine)
        .with_poll_interval(Duration::from_millis(20))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let slow_records = || {
        logs::entries_where("owner", &owner)
            .into_iter()
            .filter(|e| e.message == "store slow: claiming work took long")
            .collect::<Vec<_>>()
    };
    while slow_records().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no record of the slow claim"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Claims after it are quick again: one record.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let records = slow_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].level, log::Level::Warn);
    let took = records[0].field("took").unwrap_or_default();
    assert!(took.ends_with('s') && !took.ends_with("ms"), "{took}");
    worker.shutdown(Duration::ZERO).await;
}

/// A lease renewal that takes a third of the lease or more is told: the
/// store is slow enough to cost leases soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_lease_renewal_is_logged() {
    logs::install_logger(log::LevelFilter::Info);
    // Every renewal is slow: each of the two runs' leases has one or more.
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call(move |call| {
        if call.op == StoreOp::Renew {
            std::thread::sleep(Duration::from_millis(400));
        }
        Ok(())
    });
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_secs(1));
    let calls = Arc::new(AtomicUsize::new(0));
    engine
        .register(saga("long", 1, &calls, Duration::from_millis(1500)))
        .await
        .unwrap();
    let first = engine.start("long", Context::new()).await.unwrap();
    let second = engine.start("long", Context::new()).await.unwrap();
    for id in [&first, &second] {
        let report = finished(&engine, id).await;
        assert_eq!(report.status, ExecutionStatus::Completed);
    }
    // Told once for the engine within 10 s, not once per lease.
    let records: Vec<_> = [&first, &second]
        .into_iter()
        .flat_map(|id| logs::entries_where("execution", id.as_str()))
        .filter(|e| e.message.starts_with("store slow"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].field("renewals"), Some("1"));
    assert_eq!(records[0].field("saga"), Some("long"));
    assert_eq!(
        (records[0].level, records[0].message.as_str()),
        (
            log::Level::Warn,
            "store slow: a lease renewal took a third of the lease or more"
        )
    );
}

/// A renewal the store fails is told with its execution and its saga,
/// so that a log filtered by saga shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lease_renewal_names_its_saga() {
    logs::install_logger(log::LevelFilter::Info);
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call(move |call| {
        if call.op == StoreOp::Renew {
            return Err(StoreError::Unavailable {
                store: "renewals refused".to_owned(),
                what: "renew".to_owned(),
                source: "the test refuses every renewal".into(),
            });
        }
        Ok(())
    });
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_millis(600));
    let calls = Arc::new(AtomicUsize::new(0));
    engine
        .register(saga("renewed", 1, &calls, Duration::from_millis(500)))
        .await
        .unwrap();
    let id = engine.start("renewed", Context::new()).await.unwrap();
    let report = finished(&engine, &id).await;
    assert_eq!(report.status, ExecutionStatus::Completed);
    let failed: Vec<_> = logs::entries_where("execution", id.as_str())
        .into_iter()
        .filter(|e| e.message == "lease renewal failed")
        .collect();
    assert!(!failed.is_empty(), "no record of the failed renewal");
    assert_eq!(failed[0].field("saga"), Some("renewed"), "{failed:?}");
}
