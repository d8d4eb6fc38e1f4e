//! A purge deletes in batches, each its own transaction, so the writes of
//! the runs in flight go between them instead of waiting for the whole
//! purge (a year-old store's first purge deleted 119,400 executions in
//! one transaction and stalled every run for 1.8 s); and the batches
//! delete exactly what one purge would: the finished executions last
//! written at or before the cutoff, never a running or stuck one.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use saga_core::ExecutionId;
use saga_core::ExecutionStatus;
use saga_core::store::{Event, EventKind, Lease, SagaStore, SqliteStore};
use support::steps::unless_hung;
use support::stores::{created, every_store};

/// How many executions are created (or finished) at once: the stores'
/// writers commit them together.
const AT_ONCE: usize = 200;

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// Creates the executions `ids` and ends each with the status `end` gives
/// it, `AT_ONCE` at a time; those it gives none are left running: their
/// ids and leases.
async fn make(
    store: &Arc<dyn SagaStore>,
    ids: Vec<String>,
    end: impl Fn(usize) -> Option<ExecutionStatus>,
) -> Vec<(ExecutionId, Lease)> {
    let (mut made, mut running) = (0, Vec::new());
    for chunk in ids.chunks(AT_ONCE) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in chunk {
            let (store, id, status) = (Arc::clone(store), id.clone(), end(made));
            made += 1;
            tasks.spawn(async move {
                let (id, lease) = created(&*store, &id).await;
                match status {
                    Some(status) => finish(&*store, &id, &lease, status).await,
                    None => return Some((id, lease)),
                }
                None
            });
        }
        while let Some(done) = tasks.join_next().await {
            running.extend(done.unwrap());
        }
    }
    running
}

async fn finish(store: &dyn SagaStore, id: &ExecutionId, lease: &Lease, status: ExecutionStatus) {
    let kind = match status {
        ExecutionStatus::Stuck | ExecutionStatus::Completed => EventKind::Finished,
        ExecutionStatus::Compensated | ExecutionStatus::Cancelled => EventKind::Finished,
        ExecutionStatus::Abandoned => EventKind::Abandoned,
        _ => EventKind::RollbackStarted,
    };
    store
        .append(id, lease, vec![Event::new(1, kind)], status)
        .await
        .unwrap();
}

/// The SQLite and (with the `postgres` feature) PostgreSQL stores, fresh:
/// those whose writes share one writer.
async fn durable_stores(test: &str) -> Vec<(&'static str, Arc<dyn SagaStore>)> {
    every_store(test)
        .await
        .into_iter()
        .filter(|(name, _)| *name != "memory")
        .collect()
}

/// While a purge of many executions runs, its progress shows in steps
/// (the oldest executions are gone while later ones are still there: a
/// batch committed and the purge went on), and a write made then, with
/// half the purge still to do, completes before the purge returns. One
/// transaction for the whole purge shows neither: readers see all or
/// nothing, and the write waits for the commit of every deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_between_the_batches_of_a_purge() {
    const OLD: usize = 10_000;
    for (name, store) in durable_stores("purge_between").await {
        let ids = (0..OLD).map(|i| format!("old/{i:05}")).collect();
        make(&store, ids, |_| Some(ExecutionStatus::Completed)).await;
        // The purge goes oldest first: `old/00000` in its first batch,
        // `old/05000` half-way.
        let (first, middle) = (ExecutionId::new("old/00000"), ExecutionId::new("old/05000"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = now_ms();
        let purging = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.purge(cutoff).await }
        });
        let mut between = None;
        unless_hung(async {
            while !purging.is_finished() {
                // The deletions only progress: the middle there after the
                // first is gone means it was there when the first was.
                let first_gone = store.get(&first).await.unwrap().is_none();
                if first_gone && store.get(&middle).await.unwrap().is_some() {
                    // At most half-way: a write made now goes between two
                    // of the batches still to come.
                    created(&*store, "new").await;
                    between = Some(!purging.is_finished());
                    break;
                }
            }
        })
        .await;
        let purged = unless_hung(purging).await.unwrap().unwrap();
        assert_eq!(
            between,
            Some(true),
            "{name}: the purge's progress never showed, or a write made half-way waited for its end"
        );
        assert_eq!(purged, OLD as u64, "{name}");
        let left: Vec<String> = store
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(left, ["new"], "{name}");
    }
}

/// The batches delete what one purge would, however the executions to
/// keep are spread among them: finished ones (completed, compensated,
/// cancelled, abandoned) last written at or before the cutoff, with
/// their logs; never a running or stuck one, nor one that finished after
/// the cutoff (created before it or after); the count is the sum of the
/// batches'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_in_batches_deletes_what_one_would() {
    const MANY: usize = 3_000;
    let end = |i: usize| match i % 7 {
        0 => Some(ExecutionStatus::Completed),
        1 => Some(ExecutionStatus::Compensated),
        2 => Some(ExecutionStatus::Cancelled),
        3 => Some(ExecutionStatus::Abandoned),
        4 => Some(ExecutionStatus::Stuck),
        5 => None,
        _ => Some(ExecutionStatus::Completed),
    };
    for (name, store) in every_store("purge_same_set").await {
        let ids: Vec<String> = (0..MANY).map(|i| format!("e/{i:05}")).collect();
        // Every seventh (the `_` arm) is created before the cutoff but
        // finished after it: made running now, finished below.
        let running = make(&store, ids.clone(), |i| end(i).filter(|_| i % 7 != 6)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = now_ms();
        tokio::time::sleep(Duration::from_millis(5)).await;
        for (id, lease) in &running {
            let i: usize = id.as_str()[2..].parse().unwrap();
            if i % 7 == 6 {
                finish(&*store, id, lease, ExecutionStatus::Completed).await;
            }
        }
        let late = (0..50).map(|i| format!("late/{i:02}")).collect();
        make(&store, late, |_| Some(ExecutionStatus::Completed)).await;

        let doomed = |i: usize| i % 7 <= 3;
        let expected = (0..MANY).filter(|&i| doomed(i)).count() as u64;
        let purged = unless_hung(store.purge(cutoff)).await.unwrap();
        assert_eq!(purged, expected, "{name}");
        let mut left: Vec<String> = store
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        // Created concurrently: compared as sets.
        left.sort();
        let mut kept: Vec<String> = (0..MANY)
            .filter(|&i| !doomed(i))
            .map(|i| ids[i].clone())
            .collect();
        kept.extend((0..50).map(|i| format!("late/{i:02}")));
        assert_eq!(left, kept, "{name}");
        for i in (0..MANY).filter(|&i| doomed(i)).step_by(97) {
            let id = ExecutionId::new(ids[i].as_str());
            assert!(store.events(&id).await.unwrap().is_empty(), "{name}: {id}");
        }
        assert_eq!(store.purge(cutoff).await.unwrap(), 0, "{name}");
    }
}

/// A purge of an empty store, or of one with nothing old enough, is 0
/// and deletes nothing (the batches end at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_with_nothing_to_delete_is_zero() {
    let dir = support::durable::scratch_dir("purge_nothing");
    let store = SqliteStore::open(dir.join("sagas.db")).unwrap();
    assert_eq!(store.purge(i64::MAX).await.unwrap(), 0);
    let (id, lease) = created(&store, "young").await;
    finish(&store, &id, &lease, ExecutionStatus::Completed).await;
    assert_eq!(store.purge(0).await.unwrap(), 0);
    assert!(store.get(&id).await.unwrap().is_some());
}
