//! A statement the PostgreSQL server refuses fails with the server's own
//! message in the error's text, not the client's bare "db error": an id
//! too long for the index, a NUL byte in a name.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_core::store::{PostgresOptions, PostgresStore, SagaStore, StoreError};
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo};
use support::pg::{client, fresh_schema, pg_url};
use support::stores::new_execution;

async fn store(test: &str) -> PostgresStore {
    PostgresStore::connect_with(
        &pg_url(),
        PostgresOptions::new().with_schema(fresh_schema(test)),
    )
    .await
    .unwrap()
}

/// An id of `len` bytes that does not compress, so it stays too long for
/// a B-tree index row.
fn long_id(len: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

#[tokio::test]
async fn an_id_too_long_for_the_index_fails_with_the_servers_message() {
    let store = store("server_errors_id").await;
    let error = store
        .create(
            new_execution(&long_id(20_000)),
            "a",
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("creating an execution failed: index row"),
        "{message}"
    );
    assert!(message.contains("maximum size is"), "{message}");
    assert!(message.contains("(SQLSTATE 54000)"), "{message}");
    assert!(!message.ends_with("db error"), "{message}");
}

#[tokio::test]
async fn a_nul_byte_in_a_name_fails_with_the_servers_message() {
    let store: Arc<dyn SagaStore> = Arc::new(store("server_errors_nul").await);
    let engine = SagaEngine::with_store(Arc::clone(&store));
    let saga: Saga<()> = Saga::builder("pay\u{0}ment")
        .step(Step::new("charge", |_: &mut (), _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let message = engine.register(saga).await.unwrap_err().to_string();
    assert!(
        message.contains(
            "recording a definition failed: invalid byte sequence for encoding \"UTF8\": 0x00 (SQLSTATE 22021)"
        ),
        "{message}"
    );
}

/// A refused row's values stay out of the error everywhere: its text, its
/// source chain and its `Debug` (the server's DETAIL quotes the row, the
/// context with it: "Failing row contains (..., {"card": ...})").
#[tokio::test]
async fn a_refused_rows_values_stay_out_of_the_error_chain_and_debug() {
    let schema = fresh_schema("server_errors_detail");
    let store = PostgresStore::connect_with(&pg_url(), PostgresOptions::new().with_schema(&schema))
        .await
        .unwrap();
    client(&pg_url())
        .await
        .batch_execute(&format!(
            "ALTER TABLE {schema}.executions ADD CONSTRAINT no_cards CHECK (context NOT LIKE '%tok_%')"
        ))
        .await
        .unwrap();
    let mut new = new_execution("detail-1");
    new.context = r#"{"card":"tok_SECRET_4111"}"#.into();
    let error = store
        .create(new, "a", Duration::from_secs(60))
        .await
        .unwrap_err();
    let mut texts = vec![error.to_string(), format!("{error:?}")];
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        texts.push(cause.to_string());
        texts.push(format!("{cause:?}"));
        source = cause.source();
    }
    assert!(
        texts[0].contains("violates check constraint \"no_cards\" (SQLSTATE 23514)"),
        "{texts:#?}"
    );
    for text in &texts {
        assert!(!text.contains("tok_SECRET"), "{texts:#?}");
    }
}
