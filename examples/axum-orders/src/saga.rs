//! The order saga: reserve stock (in the context), charge the card at the
//! payment service (undo: refund), then confirm, which fails for an order
//! flagged `fail_after_charge` so that the charge is rolled back.

use std::time::Duration;

use saga_core::{BuildError, RetryPolicy, Saga, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};

use crate::payments::{PaymentError, PaymentsClient};

/// The saga's name, as registered and started.
pub const SAGA: &str = "order";

/// The saga's dependencies: what its steps use and the log must not hold.
/// The engine is given them once (`SagaEngine::with_dependencies`); every
/// step borrows them through `StepInfo::dependencies`.
#[derive(Debug)]
pub struct Services {
    /// The payment service's client (its base URL inside).
    pub payments: PaymentsClient,
}

/// An order, as `POST /orders` takes it and as the saga logs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// The order's id, which is also its execution's id.
    pub id: String,
    /// What to charge, in cents.
    pub amount: u64,
    /// Makes the step after the charge fail, so the charge is refunded.
    #[serde(default)]
    pub fail_after_charge: bool,
    /// Set by `reserve_stock`, cleared by its undo.
    #[serde(default)]
    pub reserved: bool,
}

/// A payment error as the step reports it, by what it says about the
/// request (docs/DESIGN.md, "Classifying a remote call's errors"):
///
/// | The call ended with | Applied? | The step's error |
/// |---|---|---|
/// | a `4xx` (a declined card, a refunded key) | no | permanent: not retried |
/// | `408`, `429`, or no connection at all | no | unmarked: retried |
/// | a `5xx`, a timeout, a connection lost after sending | maybe | outcome unknown: retried with the same key, then compensated |
///
/// Only an answer that says so counts as "nothing applied": a provider
/// that charges and then fails with a `500` has made the charge, and an
/// error left unmarked would roll the order back without its refund. A
/// charge whose outcome stays unknown is compensated: the refund of a key
/// never charged is harmless (it voids the key). In a refund, the same
/// marks make a `5xx` retried by the compensation's policy rather than
/// leaving the order stuck at once.
fn step_error(error: PaymentError) -> StepError {
    match error {
        PaymentError::Refused { .. } => StepError::new(error).permanent(),
        PaymentError::NotSent(_) | PaymentError::Busy { .. } => StepError::new(error),
        PaymentError::NoAnswer(_) | PaymentError::Failed { .. } => {
            StepError::new(error).outcome_unknown()
        }
    }
}

/// The order saga, with the payment service reached through [`Services`].
///
/// # Errors
/// A [`BuildError`] if the definition is wrong (it is not).
pub fn order_saga() -> Result<Saga<Order, Services>, BuildError> {
    let payment_retry = RetryPolicy::attempts(3).with_backoff(Duration::from_millis(200));
    Saga::builder(SAGA)
        // Local: the stock is the service's own, kept in the context.
        .step(
            Step::new(
                "reserve_stock",
                |o: &mut Order, _: &StepInfo<'_, Services>| {
                    o.reserved = true;
                    Ok::<_, StepError>(())
                },
            )
            .undo(
                |o: &mut Order, _: Option<&()>, _: &StepInfo<'_, Services>| {
                    o.reserved = false;
                    Ok::<_, StepError>(())
                },
            ),
        )
        .step(
            Step::new_async("charge", |o: &mut Order, info: &StepInfo<'_, Services>| {
                Box::pin(async move {
                    // The key is `{execution}/charge`: the same in every
                    // attempt, after a crash, and in the refund.
                    let key = info.idempotency_key();
                    let payments = &info.dependencies().payments;
                    payments
                        .charge(&key, &o.id, o.amount)
                        .await
                        .map_err(step_error)
                })
            })
            // The charge id is logged with the step, for the report.
            .durable()
            .retry(payment_retry)
            .undo_async(
                |_: &mut Order, _: Option<&String>, info: &StepInfo<'_, Services>| {
                    Box::pin(async move {
                        let key = info.idempotency_key();
                        let payments = &info.dependencies().payments;
                        payments.refund(&key).await.map_err(step_error)
                    })
                },
            ),
        )
        .step(Step::new(
            "confirm",
            |o: &mut Order, _: &StepInfo<'_, Services>| {
                if o.fail_after_charge {
                    return Err(StepError::new("the order was flagged `fail_after_charge`"));
                }
                Ok(())
            },
        ))
        .build()
}
