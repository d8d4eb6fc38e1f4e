//! The HTTP API: `POST /orders` starts an order's saga, `GET /orders/{id}`
//! returns its execution's report.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use saga_core::store::StoreError;
use saga_core::{EngineError, ExecutionId, SagaEngine};
use serde::Serialize;

use crate::saga::{Order, SAGA};

/// `POST /orders`: starts the order's saga under the order's id and
/// answers `202 Accepted` with it. Posting the same order again names the
/// same execution (`start_with_id` is idempotent): the same answer, and
/// nothing runs twice. `422` for an id that is empty or has a `/`.
pub async fn create_order(
    State(engine): State<SagaEngine>,
    Json(mut order): Json<Order>,
) -> Response {
    // The id names the execution and, in `GET /orders/{id}`, one path
    // segment.
    if order.id.is_empty() || order.id.contains('/') {
        let error = format!(
            "an order id must be non-empty and without `/`, not {:?}",
            order.id
        );
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(ErrorBody { error })).into_response();
    }
    // What the saga sets is not the client's to say.
    order.reserved = false;
    let id = order.id.clone();
    match engine.start_with_id(SAGA, id, order).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(Accepted { id: id.to_string() })).into_response(),
        Err(error) => engine_error(&error),
    }
}

/// `GET /orders/{id}`: the execution's report, rebuilt from the log (so it
/// works for a run this process does not hold, or one a killed process
/// left); `404` for an unknown order. It answers at once, whatever the
/// status, and the client polls: axum's graceful shutdown waits for every
/// handler, so an unbounded `engine.wait` here would hold SIGTERM for as
/// long as the slowest run a client waits on (hours for one retrying past
/// its pivot), before the worker's grace period even starts. To wait,
/// bound it (`tokio::time::timeout`, then `202 Accepted`; docs/DESIGN.md
/// section 5).
pub async fn get_order(State(engine): State<SagaEngine>, Path(id): Path<String>) -> Response {
    match engine.report(&ExecutionId::from(id)).await {
        // The report as saga-core serializes it (statuses as labels,
        // durations as `*_us` microseconds).
        Ok(report) => Json(report).into_response(),
        Err(error) => engine_error(&error),
    }
}

/// The answer to `POST /orders`.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// The execution's id: the order's.
    pub id: String,
}

/// An error's answer: `404` for an unknown execution, `409` for an id
/// another saga holds, `422` for an id the engine refuses, `503` with `Retry-After` while the store is
/// unreachable (the client may try again: posting an order is idempotent),
/// `500` for the rest, logged.
fn engine_error(error: &EngineError) -> Response {
    let body = Json(ErrorBody {
        error: error.to_string(),
    });
    match error {
        EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, body).into_response(),
        EngineError::IdTaken { .. } => (StatusCode::CONFLICT, body).into_response(),
        // An id with a control character (the check above covers the rest).
        EngineError::InvalidId { .. } => (StatusCode::UNPROCESSABLE_ENTITY, body).into_response(),
        EngineError::Store(StoreError::Unavailable { .. }) => {
            log::warn!(target: "axum_orders", error:% = error; "store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, RETRY_AFTER_SECS)],
                body,
            )
                .into_response()
        }
        _ => {
            log::error!(target: "axum_orders", error:% = error; "request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}

/// The seconds a client waits before it tries again after a `503`.
const RETRY_AFTER_SECS: &str = "1";

/// The body of an error answer.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}
