//! How many times a durable run encodes its context: once for the start
//! and once per step's end, never again for an end that changed nothing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use saga_core::store::{EventKind, MemoryStore, SagaStore};
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize, Serializer};

/// Encodes of every `Counted` so far (one test in this file).
static ENCODES: AtomicUsize = AtomicUsize::new(0);

/// A context that counts its encodes.
#[derive(Debug, Default, Deserialize)]
struct Counted {
    steps: Vec<u32>,
}

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ENCODES.fetch_add(1, Ordering::SeqCst);
        self.steps.serialize(serializer)
    }
}

const STEPS: u32 = 10;

fn saga(fail_at: Option<u32>) -> Saga<Counted> {
    let mut builder = Saga::builder("counted");
    for i in 0..STEPS {
        builder = builder.step(
            Step::new(format!("s{i}"), move |c: &mut Counted, _: &StepInfo<'_>| {
                if fail_at == Some(i) {
                    return Err(StepError::new(format!("s{i} refused")));
                }
                c.steps.push(i);
                Ok::<u32, StepError>(i)
            })
            .durable()
            .undo(move |c: &mut Counted, _: Option<&u32>, _: &StepInfo<'_>| {
                c.steps.retain(|&s| s != i);
                Ok::<(), StepError>(())
            }),
        );
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn a_run_encodes_its_context_once_per_change_and_logs_it_at_its_end() {
    for fail_at in [None, Some(STEPS - 1)] {
        let store = Arc::new(MemoryStore::new());
        let engine = SagaEngine::with_store(Arc::clone(&store) as Arc<dyn SagaStore>);
        engine.register(saga(fail_at)).await.unwrap();
        let before = ENCODES.load(Ordering::SeqCst);
        let id = engine.start("counted", Counted::default()).await.unwrap();
        let _ = engine.wait(&id).await;
        let encodes = ENCODES.load(Ordering::SeqCst) - before;
        let events = store.events(&id).await.unwrap();
        let with_context = events.iter().filter(|e| e.context.is_some()).count();
        // One for the start (the execution's record, not an event) and one
        // per event that holds a context, but the end's: it holds the
        // context of the last event before it, as that one encoded it.
        assert_eq!(encodes, with_context, "{fail_at:?}: {events:#?}");
        let last = events.last().unwrap();
        assert_eq!(last.kind, EventKind::Finished);
        let before_last = events[..events.len() - 1]
            .iter()
            .rev()
            .find_map(|e| e.context.as_ref());
        assert_eq!(last.context.as_ref(), before_last);
        let expected = match fail_at {
            None => "[0,1,2,3,4,5,6,7,8,9]",
            Some(_) => "[]",
        };
        assert_eq!(last.context.as_deref(), Some(expected));
    }
}
