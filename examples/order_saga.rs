//! The order saga of the original package's README, declared with the
//! macros: create the order, reserve stock, charge the payment, ship.
//!
//! Run 1: the card is declined, a permanent error, so the payment is not
//! retried: the reservation and the order are compensated in reverse
//! order and the error says what was rolled back.
//! Run 2: the payment gateway is busy twice; `retry 3` gets the payment
//! through and the order ships.
//!
//! `cargo run --example order_saga`. The same saga written by hand with the
//! `Task` trait is `examples/manual_tasks.rs`.

use saga_core::{StepError, StepInfo, saga, saga_task};

/// What every step of one order sees. Public, like [`order_saga`], so
/// that `tests/test_testkit.rs` tests this very saga, durable runs and
/// crashes included (hence serde: a durable saga logs its context).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub id: Option<u64>,
    /// The gateway answers "busy" this many times first.
    pub gateway_busy: u32,
    /// The card is declined.
    pub declined: bool,
    pub stock: u32,
    /// Items this order holds: the warehouse's record of the reservation,
    /// which makes reserving idempotent and lets a release undo even a
    /// reservation whose outcome is unknown.
    pub reserved: u32,
    pub charged_cents: u64,
    pub shipped: bool,
}

#[saga_task(undo = cancel_order)]
fn create_order(order: &mut Order) -> Result<u64, StepError> {
    order.id = Some(1001);
    println!("  created order 1001");
    Ok(1001)
}

#[saga_task]
fn cancel_order(order: &mut Order, id: Option<&u64>) -> Result<(), StepError> {
    println!("  cancelled order {id:?}");
    order.id = None;
    Ok(())
}

#[saga_task(undo = release_stock)]
fn reserve_stock(order: &mut Order) -> Result<u32, StepError> {
    let qty = 2;
    if order.reserved == 0 {
        order.stock = order.stock.checked_sub(qty).ok_or("out of stock")?;
        order.reserved = qty;
    }
    println!("  reserved {qty} items ({} left)", order.stock);
    Ok(qty)
}

#[saga_task]
fn release_stock(order: &mut Order, _qty: Option<&u32>) -> Result<(), StepError> {
    // The reservation record, not the step's output, says what to release:
    // it is there even when the step's outcome is unknown (output `None`),
    // and releasing twice releases nothing the second time.
    let qty = std::mem::take(&mut order.reserved);
    order.stock += qty;
    println!("  released {qty} items ({} left)", order.stock);
    Ok(())
}

#[saga_task]
fn charge_payment(order: &mut Order, info: &StepInfo<'_>) -> Result<u64, StepError> {
    if order.gateway_busy > 0 {
        order.gateway_busy -= 1;
        println!("  charge attempt {}: gateway busy", info.attempt());
        // A plain error: the step's retry policy tries again.
        return Err(StepError::new("payment gateway busy"));
    }
    if order.declined {
        println!("  charge attempt {}: card declined", info.attempt());
        // No retry fixes a declined card: `permanent` says so, and the
        // saga rolls back at once.
        return Err(StepError::new("card declined").permanent());
    }
    order.charged_cents = 4_999;
    println!("  charge attempt {}: charged 49.99", info.attempt());
    Ok(4_999)
}

#[saga_task]
fn refund_payment(order: &mut Order, cents: Option<&u64>) -> Result<(), StepError> {
    println!("  refunded {cents:?} cents");
    order.charged_cents = 0;
    Ok(())
}

#[saga_task]
fn ship_order(order: &mut Order) -> Result<(), StepError> {
    order.shipped = true;
    println!("  shipped");
    Ok(())
}

/// The saga: four steps, the last one the pivot.
pub fn order_saga() -> saga_core::Saga<Order> {
    saga! {
        name: "order",
        context: Order,
        step create_order;
        step reserve_stock;
        step charge_payment => undo refund_payment, retry 3, backoff 50ms;
        pivot ship_order;
    }
}

/// Runs both scenarios; fails if the saga does not behave as the text says
/// (the tests run this too).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let saga = order_saga();

    println!("run 1: the card is declined");
    let mut order = Order {
        declined: true,
        stock: 10,
        ..Order::default()
    };
    let err = match saga.run_blocking(&mut order) {
        Ok(report) => return Err(format!("expected a rollback, got {}", report.status).into()),
        Err(err) => err,
    };
    println!("error: {err}");
    if let Some(cause) = std::error::Error::source(&err) {
        println!("  because: {cause}");
    }
    for (step, status) in err.report().statuses() {
        println!("  {step}: {}", status.label());
    }
    println!("after run 1: {order:?}\n");
    if order.id.is_some() || order.stock != 10 || order.charged_cents != 0 {
        return Err("run 1 left effects behind".into());
    }
    if err.report().step("charge_payment").map(|s| s.attempts) != Some(1) {
        return Err("run 1 retried a declined card".into());
    }

    println!("run 2: the gateway is busy twice, then the payment goes through");
    let mut order = Order {
        gateway_busy: 2,
        stock: 10,
        ..Order::default()
    };
    let report = saga.run_blocking(&mut order)?;
    println!("status: {}", report.status.label());
    for step in &report.steps {
        println!(
            "  {}: {} after {} attempt(s)",
            step.name,
            step.status.label(),
            step.attempts
        );
    }
    println!("after run 2: {order:?}");
    if !order.shipped || report.step("charge_payment").map(|s| s.attempts) != Some(3) {
        return Err("run 2 did not ship after three payment attempts".into());
    }
    Ok(())
}
