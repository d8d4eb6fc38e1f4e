//! The ids a caller may give an execution: `start_with_id` and
//! `submit_with_id` refuse an empty id and one holding a control character
//! (NUL, a newline, an escape), on every store, with an error that shows
//! the id escaped; any other text is an id (`/`, spaces, any letter). An
//! execution a 0.1 build stored under such an id stays readable, runnable
//! and abandonable.

mod support;

use saga_core::store::{Created, NewExecution};
use saga_core::{
    EngineError, ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo,
};
use support::steps::unless_hung;
use support::stores::every_store;

/// One step that counts its runs in the context.
fn counting() -> Saga<u32> {
    Saga::<u32>::builder("counting")
        .step(Step::new("count", |n: &mut u32, _: &StepInfo<'_>| {
            *n += 1;
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// Ids no execution may be given, each with how its error shows it.
const REFUSED: [(&str, &str); 7] = [
    ("", "``"),
    ("order\u{0}42", "`order\\u{0}42`"),
    ("order-42\n", "`order-42\\u{a}`"),
    ("\u{1b}[2Jorder", "`\\u{1b}[2Jorder`"),
    ("order\t42", "`order\\u{9}42`"),
    ("order\u{7f}", "`order\\u{7f}`"),
    ("order\u{85}", "`order\\u{85}`"),
];

/// Before: all were accepted (PostgreSQL then failed on the NUL with a
/// backend error), and a newline or an escape went into every
/// idempotency key.
#[tokio::test]
async fn start_and_submit_refuse_an_empty_id_and_control_characters() {
    for (store_name, store) in every_store("ids_refused").await {
        let engine = SagaEngine::with_store(store);
        engine.register(counting()).await.unwrap();
        for (id, shown) in REFUSED {
            let started = engine.start_with_id("counting", id, 0u32).await;
            let submitted = engine.submit_with_id("counting", id, 0u32).await;
            for refused in [started, submitted] {
                let Err(error @ EngineError::InvalidId { .. }) = refused else {
                    panic!("{store_name} {id:?}: {refused:?}");
                };
                let message = error.to_string();
                assert!(
                    message.starts_with(&format!("{shown} cannot be an execution id: ")),
                    "{store_name}: {message}"
                );
                let EngineError::InvalidId { execution_id, .. } = &error else {
                    unreachable!()
                };
                assert_eq!(execution_id.as_str(), id, "{store_name}");
            }
        }
        assert_eq!(
            engine.list(None).await.unwrap().len(),
            0,
            "{store_name}: a refused id was recorded"
        );
        assert_eq!(
            engine
                .start_with_id("counting", "", 0u32)
                .await
                .unwrap_err()
                .to_string(),
            "`` cannot be an execution id: it is empty; give another id, or let `start` generate one",
        );
        assert_eq!(
            engine
                .start_with_id("counting", "a\nb", 0u32)
                .await
                .unwrap_err()
                .to_string(),
            "`a\\u{a}b` cannot be an execution id: it holds a control character (`\\u{a}`); give another id, or let `start` generate one",
        );
    }
}

#[tokio::test]
async fn any_other_text_is_an_id() {
    for (store_name, store) in every_store("ids_accepted").await {
        let engine = SagaEngine::with_store(store);
        engine.register(counting()).await.unwrap();
        for id in [
            "order/42",
            "order 42",
            " ",
            "commande-été-東京-🚀",
            "\\u{0}",
        ] {
            let started = engine.start_with_id("counting", id, 0u32).await;
            assert_eq!(started.unwrap().as_str(), id, "{store_name}");
            let report = unless_hung(engine.wait(&ExecutionId::new(id))).await;
            assert_eq!(
                report.unwrap().status,
                ExecutionStatus::Completed,
                "{store_name} {id:?}"
            );
        }
        let generated = engine.start("counting", 0u32).await.unwrap();
        unless_hung(engine.wait(&generated)).await.unwrap();
    }
}

/// 0.1 accepted any id: an execution it recorded under one that is now
/// refused is still read, recovered, waited for and abandoned by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_stored_under_such_ids_stay_reachable() {
    for (store_name, store) in every_store("ids_stored").await {
        let engine = SagaEngine::with_store(store.clone());
        let fingerprint = engine.register(counting()).await.unwrap();
        let (empty, newline) = (ExecutionId::new(""), ExecutionId::new("order\n42"));
        for id in [&empty, &newline] {
            // As 0.1 recorded it (a submission: no event yet, lease free).
            let created = store
                .create(
                    NewExecution {
                        id: id.clone(),
                        saga: "counting".into(),
                        fingerprint: fingerprint.clone(),
                        context: "0".into(),
                        events: Vec::new(),
                    },
                    "a 0.1 process",
                    std::time::Duration::from_secs(10),
                )
                .await
                .unwrap();
            let Created::New(lease) = created else {
                panic!("{store_name}: {created:?}")
            };
            store.release(id, &lease).await.unwrap();
            assert!(engine.get(id).await.unwrap().is_some(), "{store_name}");
        }
        engine.abandon(&newline).await.unwrap();
        let recovery = engine.recover().await.unwrap();
        assert_eq!(
            recovery.resumed,
            vec![empty.clone()],
            "{store_name}: {recovery:?}"
        );
        let report = unless_hung(engine.wait(&empty)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
        assert_eq!(engine.context::<u32>(&empty).await.unwrap(), 1);
        let abandoned = engine.report(&newline).await.unwrap();
        assert_eq!(abandoned.status, ExecutionStatus::Abandoned, "{store_name}");
        // The rule is about the ids callers give: a start with such an id
        // is refused even where an execution has it.
        assert!(matches!(
            engine.start_with_id("counting", empty.clone(), 0u32).await,
            Err(EngineError::InvalidId { .. })
        ));
    }
}
