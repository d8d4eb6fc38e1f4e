//! The order saga of `examples/order_saga.rs`, written by hand with the
//! `Task` trait: one type per step carrying its name, options, action and
//! undo as associated items. `#[saga_task]` writes the same impl for a
//! function (see `docs/MACROS.md` for the exact expansion); here
//! `SagaBuilder::task` adds each, and `build` checks at run time what
//! `saga!` checks at compile time.
//!
//! `cargo run --example manual_tasks` prints the same as `order_saga`.

use std::time::Duration;

use saga_core::{RetrySpec, Saga, StepError, Task, TaskFn, UndoFn};

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

/// A step is a type; its action and undo are function pointers (here
/// closures that capture nothing), its options consts.
struct CreateOrder;

impl Task<Order> for CreateOrder {
    type Output = u64;
    const NAME: &'static str = "create_order";
    const ACTION: TaskFn<Order, (), u64> = TaskFn::Exclusive(|order, _info| {
        order.id = Some(1001);
        println!("  created order 1001");
        Ok(1001)
    });
    const UNDO: Option<UndoFn<Order, (), u64>> = Some(UndoFn::Exclusive(|order, id, _info| {
        println!("  cancelled order {id:?}");
        order.id = None;
        Ok(())
    }));
}

struct ReserveStock;

impl Task<Order> for ReserveStock {
    type Output = u32;
    const NAME: &'static str = "reserve_stock";
    const ACTION: TaskFn<Order, (), u32> = TaskFn::Exclusive(|order, _| {
        let qty = 2;
        if order.reserved == 0 {
            order.stock = order.stock.checked_sub(qty).ok_or("out of stock")?;
            order.reserved = qty;
        }
        println!("  reserved {qty} items ({} left)", order.stock);
        Ok(qty)
    });
    // The reservation record says what to release, even for an unknown
    // outcome, and only once.
    const UNDO: Option<UndoFn<Order, (), u32>> = Some(UndoFn::Exclusive(|order, _qty, _| {
        let qty = std::mem::take(&mut order.reserved);
        order.stock += qty;
        println!("  released {qty} items ({} left)", order.stock);
        Ok(())
    }));
}

/// Named functions work as well as closures.
struct ChargePayment;

impl ChargePayment {
    fn charge(order: &mut Order, info: &saga_core::StepInfo<'_>) -> Result<u64, StepError> {
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

    fn refund(
        order: &mut Order,
        cents: Option<&u64>,
        _: &saga_core::StepInfo<'_>,
    ) -> Result<(), StepError> {
        println!("  refunded {cents:?} cents");
        order.charged_cents = 0;
        Ok(())
    }
}

impl Task<Order> for ChargePayment {
    type Output = u64;
    const NAME: &'static str = "charge_payment";
    // Three attempts, 50 ms apart, for a busy gateway only: a declined
    // card is final.
    const RETRY: RetrySpec = RetrySpec {
        attempts: Some(3),
        backoff: Some(Duration::from_millis(50)),
        max_backoff: None,
        retry_if: Some(|e| e.to_string().contains("busy")),
    };
    const ACTION: TaskFn<Order, (), u64> = TaskFn::Exclusive(Self::charge);
    const UNDO: Option<UndoFn<Order, (), u64>> = Some(UndoFn::Exclusive(Self::refund));
}

struct ShipOrder;

impl Task<Order> for ShipOrder {
    type Output = ();
    const NAME: &'static str = "ship_order";
    const PIVOT: bool = true;
    const ACTION: TaskFn<Order, (), ()> = TaskFn::Exclusive(|order, _| {
        order.shipped = true;
        println!("  shipped");
        Ok(())
    });
}

fn main() {
    // `build` checks at run time what `saga!` checks at compile time
    // (duplicate names, the pivot, ...), hence the `Result`.
    let saga = match Saga::builder("order")
        .task(CreateOrder)
        .task(ReserveStock)
        .task(ChargePayment)
        .task(ShipOrder)
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
