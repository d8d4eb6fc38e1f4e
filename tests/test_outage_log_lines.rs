//! What an engine logs while its store is down: one warning for all the
//! `wait`s that retry, not one per wait.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::{MemoryStore, StoreError};
use saga_core::testkit::DelayedStore;
use saga_core::{ExecutionId, SagaEngine, Step, StepError, StepInfo};
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
