//! The scenario of the original Python package's README, in Rust.
//!
//! A shop takes an order in two steps: create the order, then charge the
//! payment. If the payment fails, the order must not stay behind: the
//! saga undoes ("compensates") the order creation.
//!
//! - Run 1: the bank declines the card. The order is created, the charge
//!   fails, the order is cancelled, and the error says what happened.
//! - Run 2: the payment gateway does not answer the first time (a
//!   transient error, marked retryable); the saga waits a moment, tries
//!   again, and the order goes through.
//!
//! Run it with `cargo run --example order_saga`.

use std::error::Error;
use std::time::Duration;

use saga_core::{
    RetryPolicy, RunOptions, Saga, SagaError, SagaReport, Step, StepError, StepInfo, Task,
};

// ----------------------------------------------------------------- errors

/// The payment step's own error type. The saga hands it back to us
/// unchanged, through `source()`.
#[derive(Debug, thiserror::Error)]
enum PaymentError {
    #[error("the card was declined")]
    Declined(#[source] BankError),
    #[error("the payment gateway did not answer in time")]
    GatewayTimeout,
}

/// Why the bank declined: the cause of the cause.
#[derive(Debug, thiserror::Error)]
#[error("the bank reports insufficient funds on the card ending in {last4}")]
struct BankError {
    last4: &'static str,
}

// -------------------------------------------------------- the shop's state

/// What the steps work on: our order table and a payment gateway. In a
/// real service these would be a database and an HTTP client.
struct Checkout {
    customer: &'static str,
    amount_cents: u64,
    /// The order table.
    orders: Vec<u64>,
    next_order_id: u64,
    /// Charges the gateway holds.
    charges: Vec<String>,
    gateway: FakeGateway,
}

/// A payment gateway that answers from a script, then approves.
struct FakeGateway {
    script: Vec<Answer>,
}

#[derive(Clone, Copy)]
enum Answer {
    Decline,
    NoAnswer,
}

impl Checkout {
    fn new(script: Vec<Answer>) -> Self {
        Checkout {
            customer: "ada@example.com",
            amount_cents: 4_990,
            orders: Vec::new(),
            next_order_id: 1001,
            charges: Vec::new(),
            gateway: FakeGateway { script },
        }
    }
}

// ------------------------------------------------------------ the steps

/// Step 1: create the order. Its compensation cancels it.
struct CreateOrder;

impl Task<Checkout> for CreateOrder {
    /// The order id, handed to the compensation so it knows what to cancel.
    type Output = u64;

    fn name(&self) -> &str {
        "create_order"
    }

    fn execute(&self, shop: &mut Checkout, _: &StepInfo<'_>) -> Result<u64, StepError> {
        let id = shop.next_order_id;
        shop.next_order_id += 1;
        shop.orders.push(id);
        println!("  create_order: order #{id} created for {}", shop.customer);
        Ok(id)
    }

    fn has_compensation(&self) -> bool {
        true
    }

    fn compensate(
        &self,
        shop: &mut Checkout,
        order: Option<&u64>,
        _: &StepInfo<'_>,
    ) -> Result<(), StepError> {
        // `None` would mean "we do not know whether the order was created";
        // here the step succeeded, so we always get its id.
        if let Some(id) = order {
            shop.orders.retain(|o| o != id);
            println!("  create_order, undone: order #{id} cancelled");
        }
        Ok(())
    }
}

/// Step 2: charge the payment. Its compensation refunds the charge.
struct ChargePayment;

impl Task<Checkout> for ChargePayment {
    /// The charge id, for the refund.
    type Output = String;

    fn name(&self) -> &str {
        "charge_payment"
    }

    fn execute(&self, shop: &mut Checkout, info: &StepInfo<'_>) -> Result<String, StepError> {
        let attempt = info.attempt();
        let amount = shop.amount_cents as f64 / 100.0;
        let answer = if shop.gateway.script.is_empty() {
            None
        } else {
            Some(shop.gateway.script.remove(0))
        };
        match answer {
            Some(Answer::Decline) => {
                println!("  charge_payment (attempt {attempt}): the bank declined {amount:.2} EUR");
                // A plain error: retrying a declined card is pointless.
                Err(StepError::new(PaymentError::Declined(BankError {
                    last4: "4242",
                })))
            }
            Some(Answer::NoAnswer) => {
                println!("  charge_payment (attempt {attempt}): no answer from the gateway");
                // Marked retryable: the step's retry policy may try again.
                Err(StepError::new(PaymentError::GatewayTimeout).retryable())
            }
            None => {
                // The idempotency key is the same on every attempt: a real
                // gateway uses it to charge at most once.
                let charge = format!("ch_{}", info.idempotency_key());
                shop.charges.push(charge.clone());
                println!("  charge_payment (attempt {attempt}): {amount:.2} EUR charged");
                Ok(charge)
            }
        }
    }

    fn has_compensation(&self) -> bool {
        true
    }

    fn compensate(
        &self,
        shop: &mut Checkout,
        charge: Option<&String>,
        _: &StepInfo<'_>,
    ) -> Result<(), StepError> {
        if let Some(charge) = charge {
            shop.charges.retain(|c| c != charge);
            println!("  charge_payment, undone: charge {charge} refunded");
        }
        Ok(())
    }
}

// --------------------------------------------------------------- the saga

fn order_saga() -> Result<Saga<Checkout>, saga_core::BuildError> {
    Saga::builder("place_order")
        .task(CreateOrder)
        // Up to 3 attempts, 50 ms apart (then 100 ms), for errors the step
        // marks retryable.
        .step(
            Step::from_task(ChargePayment).retry(
                RetryPolicy::attempts(3)
                    .with_backoff(Duration::from_millis(50))
                    .with_jitter(0.0),
            ),
        )
        .build()
}

fn print_report(report: &SagaReport) {
    println!("  report: the execution ended {}", report.status);
    for step in &report.steps {
        println!(
            "    {:<15} {:<12} (outcome {}, {} attempt(s), {} compensation attempt(s))",
            step.name,
            step.status.label(),
            step.outcome.label(),
            step.attempts,
            step.compensation_attempts,
        );
    }
}

// `pub` so that `tests/test_pitfalls.rs` can run this very example.
pub fn main() -> Result<(), Box<dyn Error>> {
    let saga = order_saga()?;

    println!("Run 1: the bank declines the card");
    println!("  (when a step fails, the steps before it are undone, last first;");
    println!("  the failed step itself took no effect, so there is nothing to undo for it)");
    let mut shop = Checkout::new(vec![Answer::Decline]);
    // The execution id names this checkout; idempotency keys derive from it.
    let options = RunOptions::new().with_execution_id("checkout-1");
    match saga.run_blocking_with(&mut shop, options) {
        Ok(_) => return Err("run 1 should have failed: the card was declined".into()),
        Err(error) => {
            println!("Saga failed: {error}");
            let mut cause = error.source();
            while let Some(e) = cause {
                println!("  caused by: {e}");
                cause = e.source();
            }
            print_report(error.report());
            if !matches!(error, SagaError::Compensated { .. }) {
                return Err(format!("run 1 should have been rolled back, got: {error}").into());
            }
            // Our own error type is there to inspect, too.
            let declined = error
                .source()
                .and_then(|e| e.downcast_ref::<PaymentError>())
                .is_some_and(|e| matches!(e, PaymentError::Declined(_)));
            if !declined {
                return Err("run 1 should report the declined card".into());
            }
        }
    }
    println!(
        "  afterwards: {} order(s), {} charge(s): nothing left behind",
        shop.orders.len(),
        shop.charges.len()
    );
    if !shop.orders.is_empty() || !shop.charges.is_empty() {
        return Err("run 1 left an order or a charge behind".into());
    }

    println!();
    println!("Run 2: the gateway does not answer once, then the retry succeeds");
    println!("  (a no-answer is marked retryable; the step's policy allows 3 attempts)");
    let mut shop = Checkout::new(vec![Answer::NoAnswer]);
    let options = RunOptions::new().with_execution_id("checkout-2");
    let report = saga
        .run_blocking_with(&mut shop, options)
        .map_err(|e| format!("run 2 should have succeeded: {e}"))?;
    println!("Saga completed");
    print_report(&report);
    println!(
        "  afterwards: order(s) {:?}, charge(s) {:?}",
        shop.orders, shop.charges
    );
    let attempts = report.step("charge_payment").map(|s| s.attempts);
    if shop.orders.len() != 1 || shop.charges.len() != 1 || attempts != Some(2) {
        return Err("run 2 should hold one order and one charge after 2 attempts".into());
    }
    Ok(())
}
