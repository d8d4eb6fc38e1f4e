//! `saga watch` and `saga list` on a store of many finished executions:
//! the store watch prints each change once and, after its first look,
//! reads only what can have changed; `list --limit` with a filter stops
//! reading once it has its rows.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use saga_core::store::{
    Ack, ClaimRequest, Claimed, ClaimedWithLog, Created, DefinitionRecord, Event, ExecutionRecord,
    ExecutionSummary, Lease, ListQuery, NewExecution, SagaStore, SqliteStore, StoreResult,
};
use saga_core::{BoxFuture, ExecutionId, ExecutionStatus, SagaEngine};
use support::*;

/// How long ago the bulk of a big store was created: well before any
/// look-back of the watch.
const AN_HOUR_MS: i64 = 3_600_000;

/// Creates `n` executions `done-<i>` of saga `bulk` with a dead owner and
/// finishes them (`completed`), many at a time, then dates their
/// creation an hour back, as in a store that has run for a while.
async fn finished(db: &Path, n: usize) {
    finished_of(db, n, |_| "bulk").await;
}

/// [`finished`], execution `i` of saga `saga_of(i)`; their creations an
/// hour back, in the order of `i`.
async fn finished_of(db: &Path, n: usize, saga_of: fn(usize) -> &'static str) {
    let store = Arc::new(SqliteStore::open(db).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let id = ExecutionId::new(format!("done-{i:06}"));
            let lease = lease_of(create_of(&*store, &id, saga_of(i)).await);
            store
                .append(&id, &lease, Vec::new(), ExecutionStatus::Completed)
                .await
                .unwrap();
        });
        if tasks.len() >= 256 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    drop(store);
    let conn = rusqlite::Connection::open(db).unwrap();
    // Creation order as `i`: concurrent creates may commit out of order.
    conn.execute(
        "UPDATE executions
         SET created_at = ?1 + CAST(substr(id, 6) AS INTEGER)
         WHERE id LIKE 'done-%'",
        [now_ms() - AN_HOUR_MS],
    )
    .unwrap();
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Dates the creation of every execution of saga `bulk` an hour back.
fn backdate(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE executions SET created_at = created_at - ?1 WHERE saga = 'bulk'",
        [AN_HOUR_MS],
    )
    .unwrap();
}

/// Creates execution `id` of saga `bulk` (status `running`) for a dead
/// owner.
async fn create(store: &dyn SagaStore, id: &ExecutionId) -> Created {
    create_of(store, id, "bulk").await
}

/// Creates execution `id` of saga `saga` (status `running`) for a dead
/// owner.
async fn create_of(store: &dyn SagaStore, id: &ExecutionId, saga: &str) -> Created {
    let execution = NewExecution {
        id: id.clone(),
        saga: saga.to_owned(),
        fingerprint: "b".repeat(64),
        context: "0".to_owned(),
        events: Vec::new(),
    };
    store
        .create(execution, "dead-owner", Duration::from_secs(3600))
        .await
        .unwrap()
}

fn lease_of(created: Created) -> Lease {
    match created {
        Created::New(lease) => lease,
        Created::Existing(record) => panic!("{} exists already", record.id),
    }
}

/// The next line, or a failure after a minute.
fn next(lines: &std::sync::mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(60))
        .expect("no line within a minute")
}

/// A watch of a big store prints the unfinished executions, then exactly
/// one line per change: a new execution, one created by a process whose
/// clock is a second behind (sorting before the newest seen), a running
/// execution that finishes, a stuck one abandoned by an operator. Nothing
/// else, however many looks pass.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_watch_prints_each_change_once_on_a_big_store() {
    let dir = dir("big-watch");
    let db = populated(&dir).await; // ok-1, stuck-1, refund-1
    finished(&db, 3_000).await;
    let store = SqliteStore::open(&db).unwrap();
    let mut leases = Vec::new();
    for i in 1..=3 {
        let id = ExecutionId::new(format!("run-{i}"));
        leases.push((id.clone(), lease_of(create(&store, &id).await)));
    }

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["--store", db.to_str().unwrap(), "watch", "--interval", "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    assert_eq!(
        next(&lines),
        "watching the store: 3006 executions, 3 unfinished; Ctrl-C stops"
    );
    for i in 1..=3 {
        let line = next(&lines);
        assert!(
            line.ends_with(&format!("  run-{i}  bulk  running")),
            "{line}"
        );
    }

    let new = ExecutionId::new("new-1");
    create(&store, &new).await;
    let line = next(&lines);
    assert!(line.ends_with("  new-1  bulk  running"), "{line}");

    // Another process, its clock a second behind, creates `late-1`.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO executions (id, saga, fingerprint, status, context, last_seq,
                                 created_at, updated_at)
         SELECT 'late-1', saga, fingerprint, status, context, last_seq,
                created_at - 1000, updated_at
         FROM executions WHERE id = 'new-1'",
        [],
    )
    .unwrap();
    let line = next(&lines);
    assert!(line.ends_with("  late-1  bulk  running"), "{line}");

    let (id, lease) = &leases[1];
    store
        .append(id, lease, Vec::new(), ExecutionStatus::Completed)
        .await
        .unwrap();
    let line = next(&lines);
    assert!(line.ends_with("  run-2  bulk  completed"), "{line}");

    let ready = Arc::new(AtomicBool::new(false));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(order_saga(&ready)).await.unwrap();
    engine.abandon(&"stuck-1".into()).await.unwrap();
    let line = next(&lines);
    assert!(line.ends_with("  stuck-1  order  abandoned"), "{line}");

    // Many looks later, nothing more was printed.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    let _ = child.wait();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.is_empty(), "printed again: {rest:#?}");
}

/// A store that counts the rows its reads return.
struct Counting {
    inner: Arc<dyn SagaStore>,
    /// Summaries and records read.
    rows: Arc<AtomicUsize>,
    /// Calls of `list_summaries`.
    listings: Arc<AtomicUsize>,
}

impl SagaStore for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_definition(definition)
    }
    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.inner.definition(fingerprint)
    }
    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        self.inner.create(execution, owner, ttl)
    }
    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.inner.claim(id, owner, ttl)
    }
    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.inner.append(id, lease, events, status)
    }
    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.inner.renew(id, lease)
    }
    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.release(id, lease)
    }
    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        let rows = Arc::clone(&self.rows);
        let read = self.inner.get(id);
        Box::pin(async move {
            let record = read.await?;
            rows.fetch_add(usize::from(record.is_some()), Ordering::SeqCst);
            Ok(record)
        })
    }
    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.inner.events(id)
    }
    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        let rows = Arc::clone(&self.rows);
        let read = self.inner.list(status);
        Box::pin(async move {
            let records = read.await?;
            rows.fetch_add(records.len(), Ordering::SeqCst);
            Ok(records)
        })
    }
    fn list_summaries(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        let rows = Arc::clone(&self.rows);
        let read = self.inner.list_summaries(query);
        Box::pin(async move {
            let summaries = read.await?;
            rows.fetch_add(summaries.len(), Ordering::SeqCst);
            self.listings.fetch_add(1, Ordering::SeqCst);
            Ok(summaries)
        })
    }
    fn context<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Option<String>>> {
        self.inner.context(id)
    }
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.request_cancel(id)
    }
    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        self.inner.claim_next(request)
    }
    fn claim_next_with_log(
        &self,
        request: ClaimRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        self.inner.claim_next_with_log(request)
    }
    fn resume_requests(&self) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        self.inner.resume_requests()
    }
    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.change_signal()
    }
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.purge(before_ms)
    }
}

/// Waits until `done()` holds, failing after a minute.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many rows the store watch reads per look after its first, on a
/// store of 3,000 finished executions and `running` unfinished ones (read
/// one by one up to 64, by status listings beyond).
async fn rows_per_look(name: &str, running: usize) -> (usize, usize) {
    let dir = dir(name);
    let db = dir.join("sagas.db");
    finished(&db, 3_000).await;
    let store = SqliteStore::open(&db).unwrap();
    for i in 0..running {
        create(&store, &ExecutionId::new(format!("run-{i}"))).await;
    }
    drop(store);
    // None created lately: a look reads only those that can change.
    backdate(&db);
    let rows = Arc::new(AtomicUsize::new(0));
    let listings = Arc::new(AtomicUsize::new(0));
    let counting = Counting {
        inner: Arc::new(SqliteStore::open(&db).unwrap()),
        rows: Arc::clone(&rows),
        listings: Arc::clone(&listings),
    };
    let engine = SagaEngine::new(counting);
    let watch = saga_cli::run(&engine, ["saga", "watch", "--interval", "5"]);
    let total = 3_000 + running;
    let counted = async {
        wait_for("the first look", || rows.load(Ordering::SeqCst) >= total).await;
        // Each look lists the new executions once (and, beyond 64 that can
        // change, their three statuses): count looks by listings.
        let per_look = if running > 64 { 4 } else { 1 };
        let rows_then = rows.load(Ordering::SeqCst);
        let listings_then = listings.load(Ordering::SeqCst);
        wait_for("ten more looks", || {
            listings.load(Ordering::SeqCst) >= listings_then + 10 * per_look
        })
        .await;
        let read = rows.load(Ordering::SeqCst) - rows_then;
        let looks = (listings.load(Ordering::SeqCst) - listings_then) / per_look;
        (read, looks)
    };
    tokio::select! {
        ended = watch => panic!("the watch ended: {ended:?}"),
        counted = counted => counted,
    }
}

/// After its first look, the store watch reads per look only the
/// executions whose status can change (few: one by one) and those created
/// within seconds of the newest (the same ones here), not the 3,000
/// finished ones.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_watch_reads_only_what_can_change_after_its_first_look() {
    let (read, looks) = rows_per_look("big-watch-reads", 3).await;
    assert!(
        read <= looks * 2 * 3 + 6,
        "{read} rows read in {looks} looks (3 can change)"
    );
}

/// With more executions that can change than it reads one by one, the
/// store watch lists them by status: still not the finished ones.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_watch_lists_by_status_when_many_can_change() {
    let (read, looks) = rows_per_look("big-watch-many", 100).await;
    assert!(
        read <= looks * 2 * 100 + 200,
        "{read} rows read in {looks} looks (100 can change)"
    );
}

/// Execution `i` of [`finished_of`] in the listing tests: one in 1,000
/// is of saga `rare`.
fn rare_or_bulk(i: usize) -> &'static str {
    if i % 1_000 == 7 { "rare" } else { "bulk" }
}

/// `list --saga` with `--limit` lists the oldest executions of that saga,
/// then says there are more and where the next page starts; the pages
/// hold each execution of the saga once, in order. `--since` with
/// `--limit` lists the oldest created since.
#[tokio::test]
async fn list_with_a_limit_and_a_filter_lists_the_first_that_match() {
    let dir = dir("big-list");
    let db = populated(&dir).await; // ok-1, stuck-1, refund-1: just now
    finished_of(&db, 6_000, rare_or_bulk).await; // an hour ago

    let first_column = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .take_while(|l| !l.starts_with("next page") && !l.starts_with(char::is_numeric))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    let text = ok(&db, &["list", "--saga", "rare", "--limit", "2"]);
    assert_eq!(
        first_column(&text),
        ["done-000007", "done-001007"],
        "{text}"
    );
    assert!(text.ends_with("2 executions shown, more match\n"), "{text}");

    let mut seen = Vec::new();
    let mut args: Vec<String> = ["list", "--saga", "rare", "--limit", "4"]
        .map(String::from)
        .to_vec();
    for _ in 0..5 {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = ok(&db, &refs);
        seen.extend(first_column(&text));
        let Some(next) = text
            .lines()
            .find_map(|l| l.strip_prefix("next page: `--after "))
        else {
            assert!(text.ends_with("2 executions\n"), "{text}");
            break;
        };
        args.truncate(5);
        args.extend(["--after".to_owned(), next.trim_end_matches('`').to_owned()]);
    }
    let rare: Vec<String> = (0..6)
        .map(|k| format!("done-{:06}", k * 1_000 + 7))
        .collect();
    assert_eq!(seen, rare);

    let text = ok(&db, &["list", "--since", "10m", "--limit", "2"]);
    assert_eq!(first_column(&text), ["ok-1", "stuck-1"], "{text}");
    assert!(
        text.ends_with("2 executions shown, more match (1 stuck: `saga show <id>`)\n"),
        "{text}"
    );
    let text = ok(
        &db,
        &["list", "--since", "10m", "--saga", "refund", "--limit", "5"],
    );
    assert_eq!(first_column(&text), ["refund-1"], "{text}");
    assert!(text.ends_with("1 execution\n"), "{text}");
    let rows = json(&ok(&db, &["list", "--limit", "3", "--json"]));
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["done-000000", "done-000001", "done-000002"]);
}

/// How many summaries `saga list <args>` reads from a store of 12,003
/// executions (12,000 an hour old, one in 1,000 of saga `rare`; three
/// just now).
async fn rows_listed(db: &Path, args: &[&str]) -> usize {
    let rows = Arc::new(AtomicUsize::new(0));
    let counting = Counting {
        inner: Arc::new(SqliteStore::open(db).unwrap()),
        rows: Arc::clone(&rows),
        listings: Arc::new(AtomicUsize::new(0)),
    };
    let engine = SagaEngine::new(counting);
    let mut all = vec!["saga", "list"];
    all.extend_from_slice(args);
    saga_cli::run(&engine, all).await.unwrap();
    rows.load(Ordering::SeqCst)
}

/// `list --limit` reads no more summaries than it needs: one more than
/// the limit without a filter, from the time given with `--since`, and
/// with `--saga` pages until enough matched.
#[tokio::test]
async fn list_with_a_limit_stops_reading_once_it_has_its_rows() {
    let dir = dir("big-list-reads");
    let db = populated(&dir).await;
    finished_of(&db, 12_000, rare_or_bulk).await;
    assert_eq!(rows_listed(&db, &["--limit", "20"]).await, 21);
    assert_eq!(
        rows_listed(&db, &["--since", "10m", "--limit", "20"]).await,
        3
    );
    let read = rows_listed(&db, &["--saga", "rare", "--limit", "2"]).await;
    assert!(read <= 5_000, "{read} rows read");
    // Without a limit, every one is read.
    assert_eq!(rows_listed(&db, &["--saga", "rare"]).await, 12_003);
}
