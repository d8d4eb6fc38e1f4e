//! What an engine logs while its store is down: one warning for all the
//! `wait`s that retry, not one per wait.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::{MemoryStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{ExecutionId, SagaEngine, Step, StepError, StepInfo, Worker};
use support::logs;

const WAITS: usize = 40;

/// The lines `wait` logged about the outage for executions named
/// `prefix-*`.
fn wait_warnings(prefix: &str) -> Vec<logs::Entry> {
    logs::ENTRIES
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.message.starts_with("store unavailable while waiting"))
        .filter(|e| {
            e.field("execution")
                .is_some_and(|id| id.starts_with(&format!("{prefix}-")))
        })
        .cloned()
        .collect()
}

/// Before: every wait logged its own first warning, 40 lines at the
/// outage's start (149 in the workload that found it, 135 lines a second
/// at its peak) and as many every 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waits_through_an_outage_log_one_warning() {
    logs::install_logger(log::LevelFilter::Info);
    let down = Arc::new(AtomicBool::new(false));
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call({
        let down = Arc::clone(&down);
        move |_| {
            if down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable {
                    store: "the test store".into(),
                    what: "reading".into(),
                    source: "connection refused".into(),
                });
            }
            Ok(())
        }
    });
    let engine = SagaEngine::new(store);
    let saga = saga_core::Saga::<u32>::builder("noted")
        .step(Step::new("note", |n: &mut u32, _: &StepInfo<'_>| {
            *n += 1;
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    // Submitted, with no worker: each wait reads the record until the
    // test ends.
    let mut ids = Vec::new();
    for i in 0..WAITS {
        let id = ExecutionId::new(format!("outage-{i}"));
        engine
            .submit_with_id("noted", id.clone(), 0u32)
            .await
            .unwrap();
        ids.push(id);
    }
    down.store(true, Ordering::SeqCst);
    let waits: Vec<_> = ids
        .iter()
        .map(|id| {
            let (engine, id) = (engine.clone(), id.clone());
            tokio::spawn(async move { engine.wait(&id).await })
        })
        .collect();
    // Several retries of every wait (one each 250 ms), well within 30 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lines = wait_warnings("outage");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(line.level, log::Level::Warn);
    assert_eq!(
        line.field("waits"),
        Some(WAITS.to_string().as_str()),
        "{line:?}"
    );
    assert_eq!(line.field("owner"), Some(engine.owner()), "{line:?}");
    assert!(
        line.field("error")
            .is_some_and(|e| e.contains("the test store is unreachable")),
        "{line:?}"
    );
    for wait in &waits {
        assert!(!wait.is_finished(), "a wait ended during the outage");
    }
    for wait in waits {
        wait.abort();
    }
}

/// A worker whose claims failed other than by an outage (an SQLite disk
/// full) says when they work again, in those words: "store reachable
/// again" said before, of a store that was never unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_says_when_its_claims_work_again_after_a_full_disk() {
    logs::install_logger(log::LevelFilter::Info);
    let full = Arc::new(AtomicBool::new(true));
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call({
        let full = Arc::clone(&full);
        move |call| {
            if call.op == StoreOp::ClaimNext && full.load(Ordering::SeqCst) {
                return Err(StoreError::Backend {
                    store: "the test store".into(),
                    what: "committing (claiming executions)".into(),
                    source: "database or disk is full".into(),
                });
            }
            Ok(())
        }
    });
    let engine = SagaEngine::new(store);
    let worker = Worker::new(engine.clone())
        .with_poll_interval(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(200))
        .spawn()
        .unwrap();
    let mine = || logs::entries_where("owner", engine.owner());
    let failed = |entries: &[logs::Entry]| {
        entries
            .iter()
            .any(|e| e.message == "worker cannot claim work, retrying")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !failed(&mine()) {
        assert!(std::time::Instant::now() < deadline, "{:#?}", mine());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    full.store(false, Ordering::SeqCst);
    let again = |entries: &[logs::Entry]| {
        entries
            .iter()
            .filter(|e| e.level == log::Level::Info && e.message.starts_with("store "))
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
    };
    while again(&mine()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:#?}", mine());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        again(&mine()),
        ["store works again; worker claims work again"]
    );
    worker.shutdown(Duration::from_secs(1)).await;
}

/// Before: a worker whose claims failed claimed again at every wake-up
/// (an execution submitted, a run ended), whatever its backoff said: in
/// an outage with work arriving, a claim (and a warning) per submission.
/// Its claims now wait for the backoff, however often it is woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_backoff_does_not_claim_at_each_wake_up() {
    let (down, claims) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call({
        let (down, claims) = (Arc::clone(&down), Arc::clone(&claims));
        move |call| {
            if call.op == StoreOp::ClaimNext && down.load(Ordering::SeqCst) {
                claims.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::Unavailable {
                    store: "the test store".into(),
                    what: "claiming executions".into(),
                    source: "connection refused".into(),
                });
            }
            Ok(())
        }
    });
    let engine = SagaEngine::new(store);
    let saga = saga_core::Saga::<u32>::builder("noop")
        .step(Step::new("nothing", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let worker = Worker::new(engine.clone())
        .with_poll_interval(Duration::from_millis(20))
        .with_max_backoff(Duration::from_secs(2))
        .spawn()
        .unwrap();
    // A second of submissions, each one a work signal that wakes the
    // worker: backoff 100, 200, 400 ms then 800 allows four or five claims.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        engine.submit("noop", 0u32).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tried = claims.load(Ordering::SeqCst);
    assert!(tried <= 6, "{tried} claims in a second of backoff");
    down.store(false, Ordering::SeqCst);
    worker.shutdown(Duration::from_secs(1)).await;
}
