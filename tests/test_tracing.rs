//! Feature `tracing`: a span per execution and per step (and compensation)
//! attempt, nested so that a saga is one trace and the user's own events
//! inside a step belong to that step. A subscriber written here records
//! every span with its parent and fields.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use saga_core::store::MemoryStore;
use saga_core::{ExecutionStatus, RetryPolicy, Saga, SagaEngine, Step, StepError, StepInfo};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Debug, Clone)]
struct Span {
    id: u64,
    name: &'static str,
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
            .compensate(|_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
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

/// A `wait` that ended and did not complete, as its report.
fn ended(error: saga_core::WaitError) -> Result<saga_core::SagaReport, saga_core::WaitError> {
    match error {
        saga_core::WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}
