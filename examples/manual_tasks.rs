//! The order saga of `examples/order_saga.rs`, written by hand with the
//! `Task` trait: one type per step carrying its name, action and
//! compensation. This is what `#[saga_task]` and `saga!` save you from
//! writing: the attribute generates a type of the function's name holding
//! the step's settings (see `docs/MACROS.md` for the exact expansion), and
//! `saga!` adds each to a `Saga::builder`, after checking at compile time
//! what `build` would otherwise check at run time.
//!
//! `cargo run --example manual_tasks` prints the same as `order_saga`.

use std::time::Duration;

use saga_core::{RetryPolicy, Saga, Step, StepError, StepInfo, Task};

#[derive(Debug, Default)]
struct Order {
    id: Option<u64>,
    gateway_busy: u32,
    declined: bool,
    stock: u32,
    reserved: u32,
    charged_cents: u64,
    shipped: bool,
}

struct CreateOrder;

impl Task<Order> for CreateOrder {
    type Output = u64;

    fn name(&self) -> &str {
        "create_order"
    }

    fn execute(&self, order: &mut Order, _: &StepInfo<'_>) -> Result<u64, StepError> {
        order.id = Some(1001);
        println!("  created order 1001");
        Ok(1001)
    }

    fn has_compensation(&self) -> bool {
        true
    }

    fn compensate(
        &self,
        order: &mut Order,
        id: Option<&u64>,
        _: &StepInfo<'_>,
    ) -> Result<(), StepError> {
        println!("  cancelled order {id:?}");
        order.id = None;
        Ok(())
    }
}

struct ReserveStock;

impl Task<Order> for ReserveStock {
    type Output = u32;

    fn name(&self) -> &str {
        "reserve_stock"
    }

    fn execute(&self, order: &mut Order, _: &StepInfo<'_>) -> Result<u32, StepError> {
        let qty = 2;
        if order.reserved == 0 {
            order.stock = order.stock.checked_sub(qty).ok_or("out of stock")?;
            order.reserved = qty;
        }
        println!("  reserved {qty} items ({} left)", order.stock);
        Ok(qty)
    }

    fn has_compensation(&self) -> bool {
        true
    }

    fn compensate(
        &self,
        order: &mut Order,
        _qty: Option<&u32>,
        _: &StepInfo<'_>,
    ) -> Result<(), StepError> {
        // The reservation record says what to release, even for an unknown
        // outcome, and only once.
        let qty = std::mem::take(&mut order.reserved);
        order.stock += qty;
        println!("  released {qty} items ({} left)", order.stock);
        Ok(())
    }
}

struct ChargePayment;

impl Task<Order> for ChargePayment {
    type Output = u64;

    fn name(&self) -> &str {
        "charge_payment"
    }

    fn execute(&self, order: &mut Order, info: &StepInfo<'_>) -> Result<u64, StepError> {
        if order.gateway_busy > 0 {
            order.gateway_busy -= 1;
            println!("  charge attempt {}: gateway busy", info.attempt());
            return Err(StepError::new("payment gateway busy"));
        }
        if order.declined {
            println!("  charge attempt {}: card declined", info.attempt());
            return Err("card declined".into());
        }
        order.charged_cents = 4_999;
        println!("  charge attempt {}: charged 49.99", info.attempt());
        Ok(4_999)
    }

    fn has_compensation(&self) -> bool {
        true
    }

    fn compensate(
        &self,
        order: &mut Order,
        cents: Option<&u64>,
        _: &StepInfo<'_>,
    ) -> Result<(), StepError> {
        println!("  refunded {cents:?} cents");
        order.charged_cents = 0;
        Ok(())
    }
}

struct ShipOrder;

impl Task<Order> for ShipOrder {
    type Output = ();

    fn name(&self) -> &str {
        "ship_order"
    }

    fn execute(&self, order: &mut Order, _: &StepInfo<'_>) -> Result<(), StepError> {
        order.shipped = true;
        println!("  shipped");
        Ok(())
    }
}

fn main() {
    // `build` checks at run time what `saga!` checks at compile time
    // (duplicate names, the pivot, ...), hence the `Result`.
    let saga = match Saga::builder("order")
        .task(CreateOrder)
        .task(ReserveStock)
        .step(
            Step::from_task(ChargePayment)
                .retry(RetryPolicy::attempts(3).with_backoff(Duration::from_millis(50))),
        )
        .pivot(Step::from_task(ShipOrder))
        .build()
    {
        Ok(saga) => saga,
        Err(e) => {
            eprintln!("invalid saga: {e}");
            std::process::exit(1);
        }
    };

    println!("run 1: the card is declined");
    let mut order = Order {
        declined: true,
        stock: 10,
        ..Order::default()
    };
    match saga.run_blocking(&mut order) {
        Ok(report) => println!("unexpected success: {:?}", report.status),
        Err(err) => {
            println!("error: {err}");
            if let Some(cause) = std::error::Error::source(&err) {
                println!("  because: {cause}");
            }
            for (step, status) in err.report().statuses() {
                println!("  {step}: {}", status.label());
            }
        }
    }
    println!("after run 1: {order:?}\n");

    println!("run 2: the gateway is busy twice, then the payment goes through");
    let mut order = Order {
        gateway_busy: 2,
        stock: 10,
        ..Order::default()
    };
    match saga.run_blocking(&mut order) {
        Ok(report) => {
            println!("status: {}", report.status.label());
            for step in &report.steps {
                println!(
                    "  {}: {} after {} attempt(s)",
                    step.name,
                    step.status.label(),
                    step.attempts
                );
            }
        }
        Err(err) => println!("error: {err}"),
    }
    println!("after run 2: {order:?}");
}
