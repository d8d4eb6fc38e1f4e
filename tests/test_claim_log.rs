//! A worker's claim hands the execution over with its log: every store of
//! this crate reads the log with the claim (`claim_next_with_log`), the
//! whole log as the new lease found it, and a worker runs a claimed
//! execution from it without reading the execution or its log again.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::store::{ClaimRequest, Created, Event, EventKind, Lease, NewExecution};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{
    Context, ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo, Worker,
};
use support::stores::every_store;

/// An event with every column set (`full`) or only the required ones.
fn event(seq: u64, kind: EventKind, full: bool) -> Event {
    let mut event = Event::new(seq, kind);
    if full {
        event.step = Some(2);
        event.attempt = 3;
        event.output = Some("{\"out\":1}".into());
        event.context = Some("{\"ctx\":2}".into());
        event.error = Some("boom: é".into());
        event.outcome_unknown = true;
        event.will_retry = true;
        event.detail = Some("{\"d\":3}".into());
    }
    event
}

fn request(owner: &str) -> ClaimRequest {
    ClaimRequest {
        fingerprints: vec!["f".into()],
        owner: owner.into(),
        ttl: Duration::from_secs(60),
        limit: 10,
        exclude: Vec::new(),
    }
}

/// Executions created with a log, grown by an append and released, then
/// claimed by another owner: each comes with its whole log, as the store
/// reads it afterwards, and with its record as the store has it; an
/// execution created without events comes with an empty log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_returns_the_whole_log_and_the_record_under_the_new_lease() {
    for (name, store) in every_store("claim_log").await {
        let ttl = Duration::from_secs(60);
        for (n, events) in [(0, 0), (1, 1), (2, 3)] {
            let id = ExecutionId::new(format!("c{n}"));
            let first: Vec<Event> = (1..=events)
                .map(|seq| event(seq, EventKind::StepStarted, seq % 2 == 0))
                .collect();
            let execution = NewExecution {
                id: id.clone(),
                saga: "order".into(),
                fingerprint: "f".into(),
                context: "{}".into(),
                events: first,
            };
            let Created::New(lease) = store.create(execution, "a", ttl).await.unwrap() else {
                panic!("{name}: {id} not created");
            };
            if events > 0 {
                let more = vec![
                    event(events + 1, EventKind::StepSucceeded, true),
                    event(events + 2, EventKind::StepStarted, false),
                ];
                store
                    .append(&id, &lease, more, ExecutionStatus::Running)
                    .await
                    .unwrap();
            }
            store.release(&id, &lease).await.unwrap();
        }
        let claimed = store.claim_next_with_log(request("b")).await.unwrap();
        let ids: Vec<&str> = claimed
            .iter()
            .map(|c| c.claimed.record.id.as_str())
            .collect();
        assert_eq!(ids, ["c0", "c1", "c2"], "{name}");
        for c in &claimed {
            let id = &c.claimed.record.id;
            let events = c
                .events
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: {id} claimed without its log"));
            assert_eq!(*events, store.events(id).await.unwrap(), "{name}: {id}");
            assert_eq!(
                events.last().map_or(0, |e| e.seq),
                c.claimed.record.last_seq,
                "{name}: {id}"
            );
            let record = store.get(id).await.unwrap().unwrap();
            assert_eq!(c.claimed.record, record, "{name}: {id}");
            assert_eq!(record.owner.as_deref(), Some("b"), "{name}: {id}");
            // The lease is the claimer's: it writes under it.
            let lease: &Lease = &c.claimed.lease;
            store.renew(id, lease).await.unwrap();
        }
        assert!(
            store
                .claim_next_with_log(request("c"))
                .await
                .unwrap()
                .is_empty(),
            "{name}: live leases"
        );
    }
}

/// A store call as the test's hook saw it.
type Call = (StoreOp, Option<ExecutionId>);

fn saga() -> Saga<Context> {
    let mut builder = Saga::<Context>::builder("claimed");
    for i in 0..3 {
        builder = builder.step(Step::new(
            format!("s{i}"),
            |_: &mut Context, _: &StepInfo<'_>| Ok::<_, StepError>(()),
        ));
    }
    builder.build().unwrap()
}

/// A worker runs an execution another engine submitted: from the claim to
/// the run's first write, it reads neither the execution nor its log
/// (the claim brought both), and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_a_claimed_execution_without_reading_it_again() {
    for (name, store) in every_store("claim_log_worker").await {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let seen = Arc::clone(&calls);
        let watched = DelayedStore::shared(Arc::clone(&store), Duration::from_millis(1))
            .before_call(move |call| {
                seen.lock()
                    .unwrap()
                    .push((call.op, call.execution_id.clone()));
                Ok(())
            });
        let submitter = SagaEngine::with_store(Arc::clone(&store));
        submitter.register(saga()).await.unwrap();
        let id = submitter.submit("claimed", Context::new()).await.unwrap();
        let engine = SagaEngine::new(watched);
        engine.register(saga()).await.unwrap();
        let worker = Worker::new(engine)
            .with_poll_interval(Duration::from_millis(50))
            .spawn()
            .unwrap();
        let report = tokio::time::timeout(Duration::from_secs(60), submitter.wait(&id))
            .await
            .unwrap_or_else(|_| panic!("{name}: the worker did not run it"))
            .unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        worker.shutdown(Duration::from_secs(5)).await;
        let calls = calls.lock().unwrap().clone();
        let claim = calls
            .iter()
            .position(|(op, _)| *op == StoreOp::ClaimNext)
            .unwrap_or_else(|| panic!("{name}: no claim in {calls:?}"));
        let write = calls
            .iter()
            .position(|(op, of)| *op == StoreOp::Append && of.as_ref() == Some(&id))
            .unwrap_or_else(|| panic!("{name}: no append in {calls:?}"));
        let between: Vec<_> = calls[claim..write]
            .iter()
            .filter(|(op, of)| {
                matches!(op, StoreOp::Get | StoreOp::Events) && of.as_ref() == Some(&id)
            })
            .collect();
        assert!(
            between.is_empty(),
            "{name}: read again after its claim: {calls:?}"
        );
    }
}
