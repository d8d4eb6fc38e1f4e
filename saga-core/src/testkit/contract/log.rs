//! Checks of definitions, creation and the log.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Check, LIVE, OrFail, Outcome, append, create, ensure, entry, event, events, new_execution,
    record,
};
use crate::store::{Created, DefinitionRecord, Event, EventKind, SagaStore, StoreError, now_ms};
use crate::{ExecutionId, ExecutionStatus};

pub(super) fn checks() -> Vec<Check> {
    vec![
        entry!(
            definitions_are_kept_by_fingerprint,
            "`put_definition` records a definition under its fingerprint, and again without \
             error (idempotent); `definition` gives it back, `None` for an unknown fingerprint"
        ),
        entry!(
            create_records_a_running_execution_once,
            "`create` records a `running` execution with its saga, fingerprint and context and \
             hands its lease to the owner; a second `create` of the same id writes nothing and \
             reports the existing execution (`Created::Existing`)"
        ),
        entry!(
            create_commits_its_first_events,
            "`create` commits the `NewExecution::events` it is given with the execution: \
             `events` gives them and `last_seq` is the last one's"
        ),
        entry!(
            events_come_back_as_written,
            "`events` gives every appended event, in order, each with every field as written \
             (step, attempt, output, context, error, outcome_unknown, will_retry, detail), and \
             `append` sets the status and `last_seq`"
        ),
        entry!(
            the_store_stamps_each_event_time,
            "the store sets each event's `at_ms` to the wall-clock time of its write \
             (milliseconds since the Unix epoch); the engine passes 0, and a take-over waits \
             out a failure's backoff from that time"
        ),
        entry!(
            a_sequence_gap_or_repeat_is_refused,
            "`append` takes events whose `seq` continue the log without gaps, and `create` \
             first events numbered from 1; a gap or a repeat is refused with \
             `StoreError::BadRecord` and writes nothing"
        ),
    ]
}

async fn definitions_are_kept_by_fingerprint(store: Arc<dyn SagaStore>) -> Outcome {
    let definition = DefinitionRecord {
        fingerprint: "f1".into(),
        saga: "order".into(),
        shape: "{\"steps\":[\"reserve\",\"charge\"]}".into(),
    };
    for n in 1..=2 {
        store
            .put_definition(definition.clone())
            .await
            .or_fail(&format!("put_definition(`f1`), call {n}"))?;
    }
    let found = store.definition("f1").await.or_fail("definition(`f1`)")?;
    ensure!(
        found.as_ref() == Some(&definition),
        "`definition(\"f1\")` gave {found:?} after `put_definition({definition:?})`"
    );
    let unknown = store
        .definition("nope")
        .await
        .or_fail("definition(`nope`)")?;
    ensure!(
        unknown.is_none(),
        "`definition(\"nope\")` gave {unknown:?} for a fingerprint never put"
    );
    Ok(())
}

async fn create_records_a_running_execution_once(store: Arc<dyn SagaStore>) -> Outcome {
    let before = now_ms();
    let mut new = new_execution("x");
    new.context = "{\"order\":7}".into();
    let lease = match store.create(new, "a", LIVE).await.or_fail("create(`x`)")? {
        Created::New(lease) => lease,
        Created::Existing(record) => {
            return Err(format!(
                "`create(x)` in an empty store reported an existing execution: {record:?}"
            ));
        }
    };
    ensure!(
        &*lease.owner == "a" && lease.ttl == LIVE,
        "`create(x, owner a, ttl {LIVE:?})` gave the lease {lease:?}"
    );
    let id = ExecutionId::new("x");
    let got = record(&*store, &id).await?;
    ensure!(
        got.id == id
            && got.saga == "order"
            && got.fingerprint == "f"
            && got.context == "{\"order\":7}"
            && got.status == ExecutionStatus::Running
            && got.last_seq == 0
            && got.owner.as_deref() == Some("a")
            && !got.cancel_requested,
        "after `create(x)` (saga `order`, fingerprint `f`, context `{{\"order\":7}}`, \
         owner `a`), `get(x)` gave {got:?}"
    );
    ensure!(
        got.lease_expires_at_ms.is_some_and(|at| at > before),
        "after `create(x)` with a lease of {LIVE:?}, `get(x)` gave the lease's expiry as \
         {:?}, not a time after the call",
        got.lease_expires_at_ms
    );
    // A retried start: nothing written, the execution reported.
    let mut again = new_execution("x");
    again.context = "{\"order\":8}".into();
    again.events = vec![event(1, EventKind::StepStarted)];
    match store
        .create(again, "c", LIVE)
        .await
        .or_fail("create(`x`) again")?
    {
        Created::New(lease) => {
            return Err(format!(
                "a second `create(x)` by owner `c` created it again, with lease {lease:?}"
            ));
        }
        Created::Existing(existing) => ensure!(
            existing.owner.as_deref() == Some("a") && existing.context == "{\"order\":7}",
            "a second `create(x)` by owner `c` reported {existing:?}, not the execution \
             owner `a` created"
        ),
    }
    let after = record(&*store, &id).await?;
    let log = events(&*store, &id).await?;
    ensure!(
        after.context == "{\"order\":7}" && after.owner.as_deref() == Some("a") && log.is_empty(),
        "a second `create(x)` wrote: `get(x)` gives {after:?}, `events(x)` {} events",
        log.len()
    );
    Ok(())
}

async fn create_commits_its_first_events(store: Arc<dyn SagaStore>) -> Outcome {
    let mut new = new_execution("z");
    new.events = vec![step_event(1, EventKind::StepStarted, 0), {
        let mut e = step_event(2, EventKind::StepFailed, 0);
        e.error = Some("refused".into());
        e.will_retry = true;
        e.detail = Some("{\"retry_in_ms\":5}".into());
        e
    }];
    let written = new.events.clone();
    let Created::New(_) = store.create(new, "a", LIVE).await.or_fail("create(`z`)")? else {
        return Err("`create(z)` in an empty store reported an existing execution".into());
    };
    let id = ExecutionId::new("z");
    let log = events(&*store, &id).await?;
    same_events("`create(z)` with 2 first events", &written, &log)?;
    let got = record(&*store, &id).await?;
    ensure!(
        got.last_seq == 2,
        "after `create(z)` with events 1 and 2, `get(z)` gave `last_seq` {}",
        got.last_seq
    );
    Ok(())
}

async fn events_come_back_as_written(store: Arc<dyn SagaStore>) -> Outcome {
    let lease = create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    let first = vec![
        step_event(1, EventKind::StepStarted, 0),
        {
            let mut e = step_event(2, EventKind::StepSucceeded, 0);
            e.output = Some("{\"reservation\":\"r-1\"}".into());
            e.context = Some("{\"k\":1}".into());
            e
        },
        step_event(3, EventKind::StepStarted, 1),
    ];
    let second = vec![
        {
            let mut e = step_event(4, EventKind::StepFailed, 1);
            e.attempt = 2;
            e.error = Some("card declined: \"insufficient funds\"\nline two".into());
            e.outcome_unknown = true;
            e.will_retry = true;
            e.detail =
                Some("{\"causes\":[\"timeout\"],\"permanent\":false,\"retry_in_ms\":1500}".into());
            e
        },
        {
            let mut e = event(5, EventKind::RollbackStarted);
            e.step = Some(1);
            e.context = Some("{\"k\":2,\"ü\":\"ß\"}".into());
            e
        },
    ];
    append(
        &*store,
        &id,
        &lease,
        first.clone(),
        ExecutionStatus::Running,
    )
    .await?;
    let log = events(&*store, &id).await?;
    same_events("an append of 3 events", &first, &log)?;
    append(
        &*store,
        &id,
        &lease,
        second.clone(),
        ExecutionStatus::Compensating,
    )
    .await?;
    let log = events(&*store, &id).await?;
    let all: Vec<Event> = first.into_iter().chain(second).collect();
    same_events("appends of 3 then 2 events", &all, &log)?;
    let got = record(&*store, &id).await?;
    ensure!(
        got.last_seq == 5 && got.status == ExecutionStatus::Compensating,
        "after appends up to event 5 with status `compensating`, `get(x)` gave `last_seq` {} \
         and status `{}`",
        got.last_seq,
        got.status
    );
    Ok(())
}

async fn the_store_stamps_each_event_time(store: Arc<dyn SagaStore>) -> Outcome {
    // A store's clock (a database server's) may differ from this
    // machine's by a little; not by an hour.
    const SKEW: i64 = 3_600_000;
    let before = now_ms();
    let mut new = new_execution("x");
    new.events = vec![step_event(1, EventKind::StepStarted, 0)];
    let Created::New(lease) = store.create(new, "a", LIVE).await.or_fail("create(`x`)")? else {
        return Err("`create(x)` in an empty store reported an existing execution".into());
    };
    let id = ExecutionId::new("x");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let events_in = vec![
        step_event(2, EventKind::StepSucceeded, 0),
        step_event(3, EventKind::StepStarted, 1),
    ];
    append(&*store, &id, &lease, events_in, ExecutionStatus::Running).await?;
    let after = now_ms();
    let log = events(&*store, &id).await?;
    let times: Vec<i64> = log.iter().map(|e| e.at_ms).collect();
    ensure!(
        times.len() == 3,
        "`events(x)` gave {} events after 3 were written",
        times.len()
    );
    ensure!(
        times
            .iter()
            .all(|&at| at >= before - SKEW && at <= after + SKEW),
        "events written with `at_ms` 0 between {before} and {after} (ms since the Unix \
         epoch) came back with `at_ms` {times:?}: the store must stamp each event with the \
         time of its write"
    );
    ensure!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "the `at_ms` of events written one after another go back in time: {times:?}"
    );
    Ok(())
}

async fn a_sequence_gap_or_repeat_is_refused(store: Arc<dyn SagaStore>) -> Outcome {
    let lease = create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    let two = vec![
        step_event(1, EventKind::StepStarted, 0),
        step_event(2, EventKind::StepSucceeded, 0),
    ];
    append(&*store, &id, &lease, two, ExecutionStatus::Running).await?;
    for (what, seqs) in [
        ("a gap (event 4 after event 2)", vec![4]),
        ("a repeat (event 2 again)", vec![2]),
        ("a log starting over (event 1)", vec![1]),
        ("a gap inside one batch (events 3 and 5)", vec![3, 5]),
        ("the last number there is (u64::MAX)", vec![u64::MAX]),
    ] {
        let batch = seqs
            .iter()
            .map(|&seq| step_event(seq, EventKind::StepStarted, 1))
            .collect();
        let appended = store
            .append(&id, &lease, batch, ExecutionStatus::Running)
            .await;
        refused(appended, &format!("`append` of {what}"))?;
        let log = events(&*store, &id).await?;
        let got = record(&*store, &id).await?;
        ensure!(
            log.len() == 2 && got.last_seq == 2,
            "a refused `append` of {what} wrote: `events(x)` gives {} events, `last_seq` is {}",
            log.len(),
            got.last_seq
        );
    }
    // The lease is still good for the right event.
    let next = vec![step_event(3, EventKind::StepStarted, 1)];
    append(&*store, &id, &lease, next, ExecutionStatus::Running).await?;
    // A new execution's first events number its log from 1 too.
    let mut gapped = new_execution("y");
    gapped.events = vec![
        step_event(1, EventKind::StepStarted, 0),
        step_event(3, EventKind::StepSucceeded, 0),
    ];
    let created = store.create(gapped, "a", LIVE).await;
    refused(created, "`create` with first events 1 and 3")?;
    ensure!(
        store
            .get(&ExecutionId::new("y"))
            .await
            .or_fail("get(`y`)")?
            .is_none(),
        "a refused `create` of `y` left the execution behind"
    );
    Ok(())
}

/// `Ok` if `result` is the refusal of a bad sequence number
/// (`BadRecord`); else what `call` did instead.
fn refused<T>(result: Result<T, StoreError>, call: &str) -> Outcome {
    match result {
        Err(StoreError::BadRecord { .. }) => Ok(()),
        Err(other) => Err(format!(
            "{call} failed with {other:?}, not `StoreError::BadRecord`"
        )),
        Ok(_) => Err(format!("{call} was accepted")),
    }
}

/// An event of a step: `kind` at `seq`, step `step`, attempt 1.
fn step_event(seq: u64, kind: EventKind, step: u32) -> Event {
    let mut e = event(seq, kind);
    e.step = Some(step);
    e.attempt = 1;
    e
}

/// `Err` unless `got` is `written`, every field but `at_ms` (which the
/// store sets); `after` says what was written.
pub(super) fn same_events(after: &str, written: &[Event], got: &[Event]) -> Outcome {
    let seqs = |events: &[Event]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    ensure!(
        seqs(written) == seqs(got),
        "after {after}, the log read back has the events {:?}, not {:?}",
        seqs(got),
        seqs(written)
    );
    for (w, g) in written.iter().zip(got) {
        let differ = differences(w, g);
        ensure!(
            differ.is_empty(),
            "after {after}, the log read back has event {} with {} (written: {w:?})",
            w.seq,
            differ.join(", ")
        );
    }
    Ok(())
}

/// The fields of `got` that differ from `written`, `at_ms` aside, each
/// as "`field` x, written y".
fn differences(written: &Event, got: &Event) -> Vec<String> {
    type Field = (&'static str, fn(&Event) -> &dyn std::fmt::Debug);
    let fields: [Field; 9] = [
        ("kind", |e| &e.kind),
        ("step", |e| &e.step),
        ("attempt", |e| &e.attempt),
        ("output", |e| &e.output),
        ("context", |e| &e.context),
        ("error", |e| &e.error),
        ("outcome_unknown", |e| &e.outcome_unknown),
        ("will_retry", |e| &e.will_retry),
        ("detail", |e| &e.detail),
    ];
    let mut differ: Vec<String> = fields
        .iter()
        .filter_map(|(name, field)| {
            let (w, g) = (format!("{:?}", field(written)), format!("{:?}", field(got)));
            (w != g).then(|| format!("`{name}` {g}, written {w}"))
        })
        .collect();
    // A field added to `Event` later shows here until listed above.
    let mut rest = got.clone();
    rest.at_ms = written.at_ms;
    if differ.is_empty() && rest != *written {
        differ.push(format!("fields other than written: {got:?}"));
    }
    differ
}
