//! A stored context or step output that no longer decodes is refused with
//! a message that says what the decoder expected and where, but not the
//! stored values: contexts hold card tokens and emails, and the message
//! reaches an `EngineError`, a worker's ERROR log record and a terminal.

use std::sync::Arc;

use saga_core::store::{MemoryStore, SagaStore};
use saga_core::{EngineError, ExecutionId, Saga, SagaEngine, Step, StepError, StepInfo};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const TOKEN: &str = "tok_SECRET_4111111111111111";
const EMAIL: &str = "jane.doe@example.com";

/// The context as version 1 wrote it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Card {
    token: String,
    email: String,
}

/// Version 2: the token became a number.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CardV2 {
    token: u64,
    email: String,
}

/// `charge` (durable, its output `O`, an undo that fails for good) then
/// `ship`, which fails for good: a run ends stuck with both logged.
fn saga<C, O>(output: fn(&C) -> O) -> Saga<C>
where
    C: Serialize + DeserializeOwned + Send + Sync + 'static,
    O: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    Saga::builder("pay")
        .step(
            Step::new("charge", move |c: &mut C, _: &StepInfo<'_>| {
                Ok::<_, StepError>(output(c))
            })
            .durable()
            .undo(|_: &mut C, _: Option<&O>, _: &StepInfo<'_>| {
                Err::<(), _>(StepError::new("refund refused").permanent())
            }),
        )
        .step(Step::new("ship", |_: &mut C, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("no courier").permanent())
        }))
        .build()
        .unwrap()
}

/// A stuck execution of `pay` whose context and output hold the secrets.
async fn stuck(store: &Arc<dyn SagaStore>) -> ExecutionId {
    let engine = SagaEngine::with_store(Arc::clone(store));
    engine
        .register(saga(|c: &Card| c.token.clone()))
        .await
        .unwrap();
    let card = Card {
        token: TOKEN.to_owned(),
        email: EMAIL.to_owned(),
    };
    let id = engine.start("pay", card).await.unwrap();
    let error = engine.wait(&id).await.unwrap_err();
    assert!(error.to_string().contains("stuck"), "{error}");
    id
}

fn assert_hides_the_values(error: &EngineError, what: &str) {
    assert!(
        matches!(error, EngineError::Undecodable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(what), "{message}");
    assert!(!message.contains("tok_SECRET"), "{message}");
    assert!(!message.contains("4111"), "{message}");
    assert!(!message.contains("jane.doe"), "{message}");
    assert!(!format!("{error:?}").contains("tok_SECRET"), "{error:?}");
}

#[tokio::test]
async fn a_context_that_no_longer_decodes_is_refused_without_its_values() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let id = stuck(&store).await;
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine
        .register(saga(|c: &CardV2| c.email.clone()))
        .await
        .unwrap();
    let error = engine.resume(&id).await.unwrap_err();
    assert_hides_the_values(
        &error,
        "no longer decodes: invalid type: string, expected u64 at line 1 column 38",
    );
    let error = engine.context::<CardV2>(&id).await.unwrap_err();
    assert_hides_the_values(
        &error,
        "no longer decodes: invalid type: string, expected u64 at line 1 column 38",
    );
}

#[tokio::test]
async fn an_output_that_no_longer_decodes_is_refused_without_its_value() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let id = stuck(&store).await;
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine.register(saga(|_: &Card| 7_u64)).await.unwrap();
    let error = engine.resume(&id).await.unwrap_err();
    assert_hides_the_values(&error, "the output of step `charge` of execution");
    assert!(
        error
            .to_string()
            .contains("no longer decodes: invalid type: string, expected u64 at line 1 column 29"),
        "{error}"
    );
}
