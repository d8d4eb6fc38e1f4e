//! The PostgreSQL store on a real server, beyond the contract every store
//! keeps (`store_contract.rs`): the engine and a worker on it across
//! processes, and bad input (a foreign schema, a newer incompatible one, a
//! bad schema name, a server that is not there), each refused clearly with
//! nothing written.
#![cfg(feature = "postgres")]

mod support;

use std::time::Duration;

use saga_core::ExecutionId;
use saga_core::store::{
    Created, Event, EventKind, PostgresOptions, PostgresStore, SagaStore, StoreError,
};
use saga_core::{Context, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo, Worker};
use support::pg::{client, fresh_schema, pg_url};
use support::stores::new_execution;

async fn store(test: &str) -> (PostgresStore, String) {
    let schema = fresh_schema(test);
    let store = PostgresStore::connect_with(
        &pg_url(),
        PostgresOptions::new().with_schema(schema.clone()),
    )
    .await
    .unwrap();
    (store, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_what_another_process_submits() {
    let (store, _) = store("worker").await;
    let saga = || {
        Saga::<Context>::builder("greet")
            .step(Step::new("hello", |ctx: &mut Context, _: &StepInfo<'_>| {
                ctx.insert("greeted", true);
                Ok::<_, StepError>(())
            }))
            .build()
            .unwrap()
    };
    let submitter = SagaEngine::new(store.clone());
    submitter.register(saga()).await.unwrap();
    let engine = SagaEngine::new(store.clone());
    engine.register(saga()).await.unwrap();
    let worker = Worker::new(engine)
        .with_poll_interval(Duration::from_secs(60))
        .spawn()
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submitter.submit("greet", Context::new()).await.unwrap());
    }
    for id in &ids {
        // Noticed through NOTIFY: the poll is a minute away.
        // `wait` waits for a submitted execution until a worker runs it.
        let report = tokio::time::timeout(Duration::from_secs(50), submitter.wait(id))
            .await
            .expect("the worker did not notice the work")
            .unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed);
    }
    let stats = worker.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.claimed, stats.finished), (20, 20));
}

#[tokio::test]
async fn a_foreign_schema_is_refused_and_left_untouched() {
    let url = pg_url();
    let schema = fresh_schema("foreign");
    let sql = client(&url).await;
    sql.batch_execute(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.invoices (id INT); INSERT INTO {schema}.invoices VALUES (1)"
    ))
    .await
    .unwrap();
    let err = PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(schema.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ForeignSchema { .. }), "{err}");
    assert!(err.to_string().contains("invoices"), "{err}");
    let tables: i64 = sql
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing was created");
}

#[tokio::test]
async fn a_newer_incompatible_schema_is_refused_and_a_newer_compatible_one_is_used() {
    let (store, schema) = store("newer").await;
    drop(store);
    let url = pg_url();
    let sql = client(&url).await;
    // A newer build added things old builds can ignore: still usable.
    sql.batch_execute(&format!(
        "UPDATE {schema}.saga_schema SET version = 7; ALTER TABLE {schema}.executions ADD COLUMN priority INT"
    ))
    .await
    .unwrap();
    let opts = || PostgresOptions::new().with_schema(schema.clone());
    let store = PostgresStore::connect_with(&url, opts()).await.unwrap();
    store
        .create(new_execution("y"), "a", Duration::ZERO)
        .await
        .unwrap();
    drop(store);
    // A newer build that old ones cannot live with: refused, untouched.
    sql.batch_execute(&format!(
        "UPDATE {schema}.saga_schema SET min_compatible = 5"
    ))
    .await
    .unwrap();
    let err = PostgresStore::connect_with(&url, opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IncompatibleSchema {
                found: 7,
                required: 5,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade saga-core"), "{err}");
    let row = sql
        .query_one(
            &format!("SELECT version, min_compatible FROM {schema}.saga_schema"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (7, 5));
}

#[tokio::test]
async fn a_bad_schema_name_a_bad_url_and_an_absent_server_are_refused_clearly() {
    let err = PostgresStore::connect_with(&pg_url(), PostgresOptions::new().with_schema("x; DROP"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a plain schema name"), "{err}");
    let err = PostgresStore::connect("postgres://[::1").await.unwrap_err();
    assert!(err.to_string().contains("connection URL"), "{err}");
    // A port nothing listens on (bound, then freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PostgresStore::connect(&format!("postgres://nobody:secret@127.0.0.1:{port}/db"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}/db")), "{text}");
    // What failed first, then what to check; nothing of this project's
    // test scripts.
    assert!(
        text.ends_with("; check that the server runs and the URL is right"),
        "{text}"
    );
    assert!(!text.contains("secret"), "the password leaked: {text}");
}

/// Appends that reach the writer together share one pipelined
/// transaction. One the database rejects (two events with one sequence
/// number: the engine never writes that, the events' key refuses it) and one
/// on a lost lease fail alone, with their own errors; the others commit
/// whole, and the rejected one writes nothing.
#[tokio::test]
async fn appends_waiting_together_commit_together_and_fail_alone() {
    let (store, _) = store("batch").await;
    let mut leases = Vec::new();
    for i in 0..6 {
        let created = store
            .create(
                new_execution(&format!("b{i}")),
                "a",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let Created::New(lease) = created else {
            panic!("b{i}: not created")
        };
        leases.push(lease);
    }
    let ids: Vec<ExecutionId> = (0..6).map(|i| ExecutionId::new(format!("b{i}"))).collect();
    let events = |i: usize| {
        let mut started = Event::new(1, EventKind::StepStarted);
        started.step = Some(0);
        started.attempt = 1;
        let mut failed = Event::new(2, EventKind::StepFailed);
        failed.step = Some(0);
        failed.attempt = 1;
        failed.error = Some(format!("failure {i}"));
        if i == 2 {
            failed.seq = 1;
        }
        vec![started, failed]
    };
    let mut stale = leases[4].clone();
    stale.token -= 1;
    // A current-thread runtime: every append reaches the writer's queue
    // before the writer runs, so they make one batch.
    let results = tokio::join!(
        store.append(&ids[0], &leases[0], events(0), ExecutionStatus::Running),
        store.append(&ids[1], &leases[1], events(1), ExecutionStatus::Running),
        store.append(&ids[2], &leases[2], events(2), ExecutionStatus::Running),
        store.append(&ids[3], &leases[3], events(3), ExecutionStatus::Running),
        store.append(&ids[4], &stale, events(4), ExecutionStatus::Running),
        store.append(&ids[5], &leases[5], events(5), ExecutionStatus::Running),
    );
    let (r0, r1, r2, r3, r4, r5) = results;
    for (i, r) in [(0, &r0), (1, &r1), (3, &r3), (5, &r5)] {
        assert!(r.is_ok(), "b{i}: {:?}", r.as_ref().err());
    }
    let rejected = r2.unwrap_err();
    assert!(
        matches!(rejected, StoreError::Backend { .. }),
        "{rejected:?}"
    );
    assert!(
        rejected.to_string().contains("appending events"),
        "{rejected}"
    );
    let lost = r4.unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost:?}");
    for (i, id) in ids.iter().enumerate() {
        let logged = store.events(id).await.unwrap();
        let record = store.get(id).await.unwrap().unwrap();
        if i == 2 || i == 4 {
            assert!(logged.is_empty(), "b{i}: {logged:?}");
            assert_eq!(record.last_seq, 0, "b{i}");
        } else {
            assert_eq!(logged.len(), 2, "b{i}");
            assert_eq!(
                logged[1].error.as_deref(),
                Some(format!("failure {i}").as_str()),
                "b{i}"
            );
            assert_eq!(record.last_seq, 2, "b{i}");
        }
    }
}

/// A step's error message may hold any text, NUL included, which
/// PostgreSQL's `text` refuses: the store writes it with U+FFFD in the
/// NUL's place, and the run is logged and compensated as on any store
/// (it was lost before: the append failed).
#[tokio::test]
async fn an_error_message_with_a_nul_is_logged_with_a_replacement() {
    let (store, _) = store("nul").await;
    let engine = SagaEngine::new(store.clone());
    let saga = Saga::<Context>::builder("nul")
        .step(
            Step::new("reserve", |_: &mut Context, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            })
            .undo(|_: &mut Context, _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(())),
        )
        .step(Step::new("charge", |_: &mut Context, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("card \u{0} declined").permanent())
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = engine.start("nul", Context::new()).await.unwrap();
    let error = engine.wait(&id).await.unwrap_err();
    let report = error.report().expect("the run ended");
    assert_eq!(report.status, ExecutionStatus::Compensated);
    // The run's own report keeps the message as the step gave it; the
    // log has it as PostgreSQL could store it.
    let charge = &report.steps[1];
    assert_eq!(charge.last_error.as_deref(), Some("card \u{0} declined"));
    let events = store.events(&id).await.unwrap();
    let failed = events
        .iter()
        .find(|e| e.kind == EventKind::StepFailed)
        .expect("the failure is logged");
    assert_eq!(failed.error.as_deref(), Some("card \u{fffd} declined"));
}

/// Renewals and releases in a batch with appends (the appends pipelined
/// first, then the others): with one append the database rejects in it,
/// each write still gets its own answer and only its own effect.
#[tokio::test]
async fn renewals_and_releases_batched_with_appends_answer_alone() {
    let (store, _) = store("mixed").await;
    let mut leases = Vec::new();
    for i in 0..5 {
        let created = store
            .create(
                new_execution(&format!("m{i}")),
                "a",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let Created::New(lease) = created else {
            panic!("m{i}: not created")
        };
        leases.push(lease);
    }
    let ids: Vec<ExecutionId> = (0..5).map(|i| ExecutionId::new(format!("m{i}"))).collect();
    let started = |seq: u64| {
        let mut event = Event::new(seq, EventKind::StepStarted);
        event.step = Some(0);
        event.attempt = 1;
        event
    };
    let mut stale = leases[3].clone();
    stale.token -= 1;
    let (appended, rejected, renewed, lost, released) = tokio::join!(
        store.append(
            &ids[0],
            &leases[0],
            vec![started(1)],
            ExecutionStatus::Running
        ),
        // Two events numbered 1: the events' key refuses the second.
        store.append(
            &ids[1],
            &leases[1],
            vec![started(1), started(1)],
            ExecutionStatus::Running
        ),
        store.renew(&ids[2], &leases[2]),
        store.renew(&ids[3], &stale),
        store.release(&ids[4], &leases[4]),
    );
    appended.unwrap();
    let rejected = rejected.unwrap_err();
    assert!(
        matches!(rejected, StoreError::Backend { .. }),
        "{rejected:?}"
    );
    assert!(!renewed.unwrap().cancel_requested);
    let lost = lost.unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost:?}");
    released.unwrap();
    assert_eq!(store.events(&ids[0]).await.unwrap().len(), 1);
    assert!(store.events(&ids[1]).await.unwrap().is_empty());
    let owners: Vec<Option<String>> = {
        let mut owners = Vec::new();
        for id in &ids {
            let record = store.get(id).await.unwrap().unwrap();
            owners.push(record.owner);
        }
        owners
    };
    let a = Some("a".to_owned());
    assert_eq!(owners, [a.clone(), a.clone(), a.clone(), a, None]);
}

/// Appends beside a renewal and a release in one batch (the appends
/// pipelined first, then the others): every write commits, each with its
/// own answer.
#[tokio::test]
async fn appends_beside_other_writes_commit_with_them() {
    let (store, _) = store("beside").await;
    let mut leases = Vec::new();
    for i in 0..4 {
        let created = store
            .create(
                new_execution(&format!("w{i}")),
                "a",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let Created::New(lease) = created else {
            panic!("w{i}: not created")
        };
        leases.push(lease);
    }
    let ids: Vec<ExecutionId> = (0..4).map(|i| ExecutionId::new(format!("w{i}"))).collect();
    let started = |seq: u64| {
        let mut event = Event::new(seq, EventKind::StepStarted);
        event.step = Some(0);
        event.attempt = 1;
        event
    };
    let (first, renewed, released, last) = tokio::join!(
        store.append(
            &ids[0],
            &leases[0],
            vec![started(1)],
            ExecutionStatus::Running
        ),
        store.renew(&ids[1], &leases[1]),
        store.release(&ids[2], &leases[2]),
        store.append(
            &ids[3],
            &leases[3],
            vec![started(1), started(2)],
            ExecutionStatus::Running
        ),
    );
    assert!(!first.unwrap().cancel_requested);
    assert!(!renewed.unwrap().cancel_requested);
    released.unwrap();
    assert!(!last.unwrap().cancel_requested);
    assert_eq!(store.events(&ids[0]).await.unwrap().len(), 1);
    assert_eq!(store.events(&ids[3]).await.unwrap().len(), 2);
    assert_eq!(store.get(&ids[3]).await.unwrap().unwrap().last_seq, 2);
    assert_eq!(store.get(&ids[2]).await.unwrap().unwrap().owner, None);
}

/// Appends to distinct executions that reach the writer together go to
/// the server as one statement; each is still fenced and checked on its
/// own: one on a gap in the log (a `BadRecord`, nothing written), one to
/// an execution that does not exist, one that finishes its execution
/// (its lease dropped), one with no events, one whose execution has a
/// cancellation requested (its answer says so), beside plain ones.
/// Two appends to one execution in a batch go one after the other, as
/// before: the second follows the first.
#[tokio::test]
async fn appends_in_one_statement_are_each_fenced_and_checked() {
    let (store, _) = store("many").await;
    let mut leases = Vec::new();
    for i in 0..6 {
        let created = store
            .create(
                new_execution(&format!("n{i}")),
                "a",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let Created::New(lease) = created else {
            panic!("n{i}: not created")
        };
        leases.push(lease);
    }
    let ids: Vec<ExecutionId> = (0..6).map(|i| ExecutionId::new(format!("n{i}"))).collect();
    assert!(store.request_cancel(&ids[5]).await.unwrap());
    let started = |seq: u64| {
        let mut event = Event::new(seq, EventKind::StepStarted);
        event.step = Some(0);
        event.attempt = 1;
        event
    };
    let missing = ExecutionId::new("n-missing");
    // A current-thread runtime: every append reaches the writer's queue
    // before the writer runs, so they make one batch.
    let (plain, gap, unknown, finished, empty, cancelled) = tokio::join!(
        store.append(
            &ids[0],
            &leases[0],
            vec![started(1), started(2)],
            ExecutionStatus::Running
        ),
        // The log ends at 0: an append from 3 leaves a gap.
        store.append(
            &ids[1],
            &leases[1],
            vec![started(3)],
            ExecutionStatus::Running
        ),
        store.append(
            &missing,
            &leases[2],
            vec![started(1)],
            ExecutionStatus::Running
        ),
        store.append(
            &ids[3],
            &leases[3],
            vec![started(1), Event::new(2, EventKind::Finished)],
            ExecutionStatus::Completed
        ),
        store.append(&ids[4], &leases[4], Vec::new(), ExecutionStatus::Running),
        store.append(
            &ids[5],
            &leases[5],
            vec![started(1)],
            ExecutionStatus::Running
        ),
    );
    assert!(!plain.unwrap().cancel_requested);
    let gap = gap.unwrap_err();
    assert!(matches!(gap, StoreError::BadRecord { .. }), "{gap:?}");
    let unknown = unknown.unwrap_err();
    assert!(
        matches!(unknown, StoreError::NotFound { .. }),
        "{unknown:?}"
    );
    assert!(!finished.unwrap().cancel_requested);
    assert!(!empty.unwrap().cancel_requested);
    assert!(cancelled.unwrap().cancel_requested);
    let record = |i: usize| {
        let store = store.clone();
        let id = ids[i].clone();
        async move { store.get(&id).await.unwrap().unwrap() }
    };
    assert_eq!(store.events(&ids[0]).await.unwrap().len(), 2);
    assert_eq!(record(0).await.last_seq, 2);
    assert!(store.events(&ids[1]).await.unwrap().is_empty());
    assert_eq!(record(1).await.last_seq, 0);
    assert!(store.get(&missing).await.unwrap().is_none());
    let done = record(3).await;
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.owner, None);
    assert_eq!(done.last_seq, 2);
    assert_eq!(record(4).await.last_seq, 0);
    assert_eq!(record(5).await.last_seq, 1);
    let a = Some("a".to_owned());
    for i in [0, 1, 4, 5] {
        assert_eq!(record(i).await.owner, a, "n{i}");
    }

    // Two appends to one execution, side by side with another.
    let (first, second, other) = tokio::join!(
        store.append(
            &ids[0],
            &leases[0],
            vec![started(3)],
            ExecutionStatus::Running
        ),
        store.append(
            &ids[0],
            &leases[0],
            vec![started(4)],
            ExecutionStatus::Running
        ),
        store.append(
            &ids[1],
            &leases[1],
            vec![started(1)],
            ExecutionStatus::Running
        ),
    );
    first.unwrap();
    second.unwrap();
    other.unwrap();
    assert_eq!(record(0).await.last_seq, 4);
    assert_eq!(store.events(&ids[0]).await.unwrap().len(), 4);
    assert_eq!(record(1).await.last_seq, 1);
}
