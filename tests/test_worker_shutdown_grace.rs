//! A worker's shutdown stops every run still going when its grace period
//! ends, all at once: no run starts a step after that, and its stats say
//! how many runs ended and how many were stopped, as the store does.
//!
//! Before: the runs were stopped one after another, each once its current
//! sync step returned, so the runs not yet reached went on starting steps
//! (an outside workload: 113 steps started after a 300 ms grace, the last
//! 2.7 s after SIGTERM), and every run was counted as released, also the
//! ones that had ended meanwhile.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saga_core::store::SqliteStore;
use saga_core::{
    ExecutionStatus, Saga, SagaBuilder, SagaEngine, Step, StepError, StepInfo, Worker,
};
use support::durable::scratch_dir;

const RUNS: usize = 6;
const STEP: Duration = Duration::from_millis(300);

/// Four sync steps of [`STEP`]; each start is noted in `starts`.
fn saga(starts: &Arc<Mutex<Vec<Instant>>>) -> Saga<u32> {
    let mut builder: SagaBuilder<u32> = Saga::builder("slow");
    for name in ["a", "b", "c", "d"] {
        let starts = Arc::clone(starts);
        builder = builder.step(Step::new(name, move |_: &mut u32, _: &StepInfo<'_>| {
            starts.lock().unwrap().push(Instant::now());
            std::thread::sleep(STEP);
            Ok::<(), StepError>(())
        }));
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_every_run_at_the_end_of_its_grace() {
    let path = scratch_dir("shutdown_grace").join("sagas.db");
    let starts = Arc::new(Mutex::new(Vec::new()));
    let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
    engine.register(saga(&starts)).await.unwrap();
    let worker = Worker::new(engine.clone())
        .with_concurrency(RUNS)
        .with_poll_interval(Duration::from_millis(20))
        .spawn()
        .unwrap();
    for _ in 0..RUNS {
        engine.submit("slow", 0_u32).await.unwrap();
    }
    // Every run is in its first step.
    let waited = Instant::now();
    while starts.lock().unwrap().len() < RUNS {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "runs never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grace = Duration::from_millis(100);
    let asked = Instant::now();
    let stats = worker.shutdown(grace).await;
    // A step under way when the grace ended may finish; none starts later
    // (a little slack for a start racing the deadline).
    let late: Vec<Duration> = starts
        .lock()
        .unwrap()
        .iter()
        .filter(|at| **at > asked + grace + Duration::from_millis(50))
        .map(|at| at.duration_since(asked))
        .collect();
    assert!(
        late.is_empty(),
        "steps started after the grace ended: {late:?}"
    );

    let mut ended = 0;
    for record in engine.list(None).await.unwrap() {
        if record.status.is_finished() {
            ended += 1;
        } else {
            assert_eq!(record.status, ExecutionStatus::Running);
            assert_eq!(record.owner, None, "a stopped run's lease is given back");
        }
    }
    assert_eq!(stats.claimed, RUNS as u64, "{stats:?}");
    assert_eq!(
        (stats.finished, stats.released),
        (ended, RUNS as u64 - ended),
        "{stats:?}"
    );
}
