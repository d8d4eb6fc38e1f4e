//! Feature `tracing`: a span per execution and per step (and compensation)
//! attempt, nested so that a saga is one trace and the user's own events
//! inside a step belong to that step; a durable run joins the trace of the
//! request that started it, and a run taken over from its log starts a
//! trace of its own. A subscriber written here records every span with its
//! parent and fields.

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use saga_core::store::{MemoryStore, SagaStore};
use saga_core::{ExecutionStatus, RetryPolicy, Saga, SagaEngine, Step, StepError, StepInfo};
use support::durable::{Point, Script, saga, start_and_crash};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Instrument, Metadata, Subscriber};
use tracing_core::span::Current;

#[derive(Debug, Clone)]
struct Span {
    id: u64,
    name: &'static str,
    metadata: &'static Metadata<'static>,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Logged {
    message: String,
    span: Option<u64>,
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<Vec<Span>>,
    events: Mutex<Vec<Logged>>,
    /// The entered spans (one thread: the tests run on a current-thread
    /// runtime or block on the calling thread).
    stack: Mutex<Vec<u64>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

/// The subscriber: shares its recordings with the test.
struct Sub(Arc<Recorder>);

impl Subscriber for Sub {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attrs.is_contextual() => self.0.stack.lock().unwrap().last().copied(),
            None => None,
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.spans.lock().unwrap().push(Span {
            id,
            name: attrs.metadata().name(),
            metadata: attrs.metadata(),
            parent,
            fields,
        });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.0.spans.lock().unwrap();
        let span = spans.iter_mut().find(|s| s.id == span.into_u64()).unwrap();
        values.record(&mut Fields(&mut span.fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.events.lock().unwrap().push(Logged {
            message: fields.remove("message").unwrap_or_default(),
            span: self.0.stack.lock().unwrap().last().copied(),
        });
    }

    fn enter(&self, span: &Id) {
        self.0.stack.lock().unwrap().push(span.into_u64());
    }

    /// What `Span::current()` returns: the innermost entered span (the
    /// engine captures it when a durable run starts).
    fn current_span(&self) -> Current {
        let Some(id) = self.0.stack.lock().unwrap().last().copied() else {
            return Current::none();
        };
        let spans = self.0.spans.lock().unwrap();
        let span = spans.iter().find(|s| s.id == id).unwrap();
        Current::new(Id::from_u64(id), span.metadata)
    }

    fn exit(&self, span: &Id) {
        let mut stack = self.0.stack.lock().unwrap();
        if let Some(at) = stack.iter().rposition(|s| *s == span.into_u64()) {
            stack.remove(at);
        }
    }
}

impl Recorder {
    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// `(name, step, attempt, error)` of each span under `parent`, in order.
    fn children(&self, parent: u64) -> Vec<(String, String, String, Option<String>)> {
        self.spans()
            .into_iter()
            .filter(|s| s.parent == Some(parent))
            .map(|s| {
                (
                    s.name.to_owned(),
                    s.fields["step"].clone(),
                    s.fields["attempt"].clone(),
                    s.fields.get("error").cloned(),
                )
            })
            .collect()
    }
}

fn strings(
    items: &[(&str, &str, &str, Option<&str>)],
) -> Vec<(String, String, String, Option<String>)> {
    items
        .iter()
        .map(|(a, b, c, d)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.map(str::to_owned),
            )
        })
        .collect()
}

fn order() -> Saga<u32> {
    Saga::builder("order")
        .step(
            Step::new("reserve", |n: &mut u32, _: &StepInfo<'_>| {
                *n += 1;
                Ok::<_, StepError>(())
            })
            .undo(|_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
                tracing::info!("releasing the stock");
                Ok::<_, StepError>(())
            }),
        )
        .step(
            Step::new("charge", |_: &mut u32, info: &StepInfo<'_>| {
                tracing::info!(attempt = info.attempt(), "calling the bank");
                if info.attempt() == 1 {
                    return Err(StepError::new("bank busy"));
                }
                Ok(())
            })
            .retry(RetryPolicy::attempts(2).with_backoff(std::time::Duration::ZERO)),
        )
        .step(Step::new("ship", |n: &mut u32, _: &StepInfo<'_>| {
            if *n > 1 {
                return Err(StepError::new("no courier"));
            }
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap()
}

#[test]
fn a_run_is_one_trace_with_a_span_per_attempt() {
    let recorder = Arc::new(Recorder::default());
    let report = tracing::subscriber::with_default(Sub(Arc::clone(&recorder)), || {
        order().run_blocking(&mut 0).unwrap()
    });
    let spans = recorder.spans();
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0];
    assert_eq!(root.name, "saga");
    assert_eq!(root.fields["saga"], "order");
    assert_eq!(root.fields["execution_id"], report.execution_id.as_str());
    assert_eq!(root.fields["status"], "completed");
    assert_eq!(
        recorder.children(root.id),
        strings(&[
            ("step", "reserve", "1", None),
            ("step", "charge", "1", Some("bank busy")),
            ("step", "charge", "2", None),
            ("step", "ship", "1", None),
        ])
    );
    // The user's events inside a step belong to that attempt's span.
    let events = recorder.events.lock().unwrap().clone();
    let bank: Vec<&Span> = events
        .iter()
        .filter(|e| e.message == "calling the bank")
        .map(|e| spans.iter().find(|s| Some(s.id) == e.span).unwrap())
        .collect();
    assert_eq!(bank.len(), 2);
    assert!(
        bank.iter()
            .all(|s| s.name == "step" && s.fields["step"] == "charge")
    );
    assert_eq!(bank[0].fields["attempt"], "1");
    assert_eq!(bank[1].fields["attempt"], "2");
}

#[test]
fn a_rollback_shows_compensation_spans_in_the_same_trace() {
    let recorder = Arc::new(Recorder::default());
    let error = tracing::subscriber::with_default(Sub(Arc::clone(&recorder)), || {
        order().run_blocking(&mut 1).unwrap_err()
    });
    assert_eq!(error.report().status, ExecutionStatus::Compensated);
    let spans = recorder.spans();
    let root = spans.iter().find(|s| s.parent.is_none()).unwrap();
    assert_eq!(root.fields["status"], "compensated");
    let children = recorder.children(root.id);
    assert_eq!(
        children[3..],
        strings(&[
            ("step", "ship", "1", Some("no courier")),
            ("compensation", "reserve", "1", None),
        ])
    );
    let spans_of_events: Vec<&'static str> = recorder
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.message == "releasing the stock")
        .map(|e| spans.iter().find(|s| Some(s.id) == e.span).unwrap().name)
        .collect();
    assert_eq!(spans_of_events, ["compensation"]);
}

/// A step error's text reaches the span's `error` field with its control
/// characters escaped, as in the `log` records: an ESC sequence or a
/// newline from a service's answer cannot recolour a terminal or forge a
/// line of a subscriber's output.
#[test]
fn a_span_error_has_its_control_characters_escaped() {
    let recorder = Arc::new(Recorder::default());
    let hostile = Saga::<u32>::builder("order")
        .step(Step::new("charge", |_: &mut u32, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("declined\u{1b}]0;PWNED\u{7}\nFAKE LINE").permanent())
        }))
        .build()
        .unwrap();
    tracing::subscriber::with_default(Sub(Arc::clone(&recorder)), || {
        hostile.run_blocking(&mut 0).unwrap_err()
    });
    let spans = recorder.spans();
    let root = spans.iter().find(|s| s.parent.is_none()).unwrap();
    assert_eq!(
        recorder.children(root.id),
        strings(&[(
            "step",
            "charge",
            "1",
            Some("declined\\u{1b}]0;PWNED\\u{7}\\u{a}FAKE LINE")
        )])
    );
}

#[test]
fn a_durable_run_has_the_same_spans() {
    let recorder = Arc::new(Recorder::default());
    let dispatch = tracing::Dispatch::new(Sub(Arc::clone(&recorder)));
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let engine = SagaEngine::new(MemoryStore::new());
        engine.register(order()).await.unwrap();
        let id = engine.start("order", 0_u32).await.unwrap();
        engine.wait(&id).await.or_else(ended).unwrap()
    });
    assert_eq!(report.status, ExecutionStatus::Completed);
    let spans = recorder.spans();
    let root = spans
        .iter()
        .find(|s| s.name == "saga")
        .expect("an execution span");
    assert_eq!(root.fields["execution_id"], report.execution_id.as_str());
    assert_eq!(root.fields["status"], "completed");
    assert_eq!(recorder.children(root.id).len(), 4);
}

/// A current-thread runtime, so every task is polled on the thread whose
/// default subscriber records it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `start_with_id` called inside an HTTP request's span: the durable run
/// goes on in a task of its own, and its `saga` span is a child of the
/// request's (one trace from the request to the last step).
#[test]
fn a_durable_run_joins_the_trace_of_the_request_that_started_it() {
    let recorder = Arc::new(Recorder::default());
    let dispatch = tracing::Dispatch::new(Sub(Arc::clone(&recorder)));
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let report = runtime().block_on(async {
        let engine = SagaEngine::new(MemoryStore::new());
        engine.register(order()).await.unwrap();
        let request = tracing::info_span!("http request", method = "POST", path = "/orders");
        let id = engine
            .start_with_id("order", "order-7", 0_u32)
            .instrument(request)
            .await
            .unwrap();
        // Waited for outside the request's span: the run's span does not
        // depend on where it is awaited.
        engine.wait(&id).await.unwrap()
    });
    assert_eq!(report.status, ExecutionStatus::Completed);
    let spans = recorder.spans();
    let request = spans
        .iter()
        .find(|s| s.name == "http request")
        .expect("the request's span");
    let run = spans
        .iter()
        .find(|s| s.name == "saga")
        .expect("the run's span");
    assert_eq!(run.parent, Some(request.id), "{spans:#?}");
    assert_eq!(run.fields["execution_id"], "order-7");
    assert_eq!(run.fields["resumed"], "false");
    assert_eq!(run.fields["status"], "completed");
    assert_eq!(recorder.children(run.id).len(), 4);
}

/// A run recovered after its owner crashed is a root span with `resumed =
/// true`, even though the recovery is called inside a span of its own: the
/// recovering loop is not what the run belongs to.
#[test]
fn a_recovered_run_is_a_root_span_marked_resumed() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let script = Arc::new(Script::default());
    *script.hang.lock().unwrap() = Some(Point::Step(2));
    // Crashed mid-step, with no subscriber: only the recovery is recorded.
    let id = start_and_crash(&store, saga(&script), &script);
    *script.hang.lock().unwrap() = None;

    let recorder = Arc::new(Recorder::default());
    let dispatch = tracing::Dispatch::new(Sub(Arc::clone(&recorder)));
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let report = runtime().block_on(async {
        let engine = SagaEngine::with_store(Arc::clone(&store))
            .with_lease_ttl(std::time::Duration::from_millis(100));
        engine.register(saga(&script)).await.unwrap();
        let sweep = tracing::info_span!("recovery sweep");
        loop {
            let recovery = engine.recover().instrument(sweep.clone()).await.unwrap();
            if recovery.resumed.contains(&id) {
                break;
            }
            // The crashed owner's lease has not expired yet.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        engine.wait(&id).await.unwrap()
    });
    assert_eq!(report.status, ExecutionStatus::Completed);
    let spans = recorder.spans();
    let runs: Vec<&Span> = spans.iter().filter(|s| s.name == "saga").collect();
    assert_eq!(runs.len(), 1, "{spans:#?}");
    let run = runs[0];
    assert_eq!(run.parent, None, "{spans:#?}");
    assert_eq!(run.fields["execution_id"], id.as_str());
    assert_eq!(run.fields["resumed"], "true");
    assert_eq!(run.fields["status"], "completed");
    // Its steps hang under it: the one cut off by the crash, then the rest.
    let steps: Vec<String> = recorder
        .children(run.id)
        .into_iter()
        .map(|(_, step, _, _)| step)
        .collect();
    assert_eq!(steps, ["s2", "s3", "s4"]);
}

/// A submitted execution's first run, claimed by a `Worker` spawned inside
/// a span: a root span, not marked resumed (nothing was taken over).
#[test]
fn a_submitted_run_a_worker_claims_is_a_root_not_resumed() {
    let recorder = Arc::new(Recorder::default());
    let dispatch = tracing::Dispatch::new(Sub(Arc::clone(&recorder)));
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let (id, report) = runtime().block_on(async {
        let engine = SagaEngine::new(MemoryStore::new());
        engine.register(order()).await.unwrap();
        let id = engine.submit("order", 0_u32).await.unwrap();
        let startup = tracing::info_span!("service startup");
        let worker = startup.in_scope(|| saga_core::Worker::new(engine.clone()).spawn().unwrap());
        let report = engine.wait(&id).await.unwrap();
        worker.shutdown(std::time::Duration::ZERO).await;
        (id, report)
    });
    assert_eq!(report.status, ExecutionStatus::Completed);
    let spans = recorder.spans();
    let runs: Vec<&Span> = spans.iter().filter(|s| s.name == "saga").collect();
    assert_eq!(runs.len(), 1, "{spans:#?}");
    assert_eq!(runs[0].parent, None, "{spans:#?}");
    assert_eq!(runs[0].fields["execution_id"], id.as_str());
    assert_eq!(runs[0].fields["resumed"], "false");
}

/// A `wait` that ended and did not complete, as its report.
fn ended(error: saga_core::WaitError) -> Result<saga_core::SagaReport, saga_core::WaitError> {
    match error {
        saga_core::WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}
