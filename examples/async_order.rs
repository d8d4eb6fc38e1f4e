//! Async steps calling a service with a timeout, declared with the macros.
//!
//! The "warehouse" is a local, in-process async service (a task behind a
//! channel, as a client library would wrap a remote one). Its first answer
//! is slow: the step's 200 ms timeout drops that attempt, whose outcome is
//! then unknown (the warehouse does process the request), and the retry
//! sends it again with the same idempotency key, which the warehouse
//! recognises. The payment then fails, so the reservation is released.
//!
//! `cargo run --example async_order`

use std::collections::HashMap;
use std::time::Duration;

use saga_core::{RunOptions, StepError, StepInfo, saga, saga_task};
use tokio::sync::{mpsc, oneshot};

/// A request to the warehouse, with where to send the answer.
enum Request {
    Reserve {
        key: String,
        qty: u32,
        reply: oneshot::Sender<u32>,
    },
    Release {
        key: String,
        reply: oneshot::Sender<Option<u32>>,
    },
}

/// The client side of the warehouse service.
#[derive(Clone)]
struct Warehouse {
    requests: mpsc::Sender<Request>,
}

impl Warehouse {
    /// Starts the service: its first `slow_answers` answers take 300 ms.
    fn start(slow_answers: u32) -> Warehouse {
        let (requests, mut inbox) = mpsc::channel::<Request>(16);
        tokio::spawn(async move {
            let mut reservations: HashMap<String, u32> = HashMap::new();
            let mut slow = slow_answers;
            while let Some(request) = inbox.recv().await {
                if slow > 0 {
                    slow -= 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                match request {
                    Request::Reserve { key, qty, reply } => {
                        // Idempotent: a repeated key gets the same reservation.
                        let held = *reservations.entry(key.clone()).or_insert(qty);
                        println!("  warehouse: reserved {held} for {key}");
                        let _ = reply.send(held);
                    }
                    Request::Release { key, reply } => {
                        let released = reservations.remove(&key);
                        println!("  warehouse: released {released:?} for {key}");
                        let _ = reply.send(released);
                    }
                }
            }
        });
        Warehouse { requests }
    }

    async fn reserve(&self, key: String, qty: u32) -> Result<u32, StepError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Reserve { key, qty, reply })
            .await
            .map_err(|_| "warehouse is down")?;
        Ok(answer.await.map_err(|_| "warehouse hung up")?)
    }

    async fn release(&self, key: String) -> Result<Option<u32>, StepError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Release { key, reply })
            .await
            .map_err(|_| "warehouse is down")?;
        Ok(answer.await.map_err(|_| "warehouse hung up")?)
    }
}

struct Checkout {
    warehouse: Warehouse,
    log: Vec<String>,
}

#[saga_task(undo = release_stock, timeout = "200ms", retry(attempts = 3, backoff = "10ms"))]
async fn reserve_stock(c: &mut Checkout, info: &StepInfo<'_>) -> Result<u32, StepError> {
    println!("  reserve_stock: attempt {}", info.attempt());
    let held = c.warehouse.reserve(info.idempotency_key(), 2).await?;
    c.log.push(format!("reserved {held}"));
    Ok(held)
}

/// `held` is `None` when the reservation's outcome is unknown; the release
/// goes by the idempotency key either way.
#[saga_task]
async fn release_stock(
    c: &mut Checkout,
    held: Option<&u32>,
    info: &StepInfo<'_>,
) -> Result<(), StepError> {
    let released = c.warehouse.release(info.idempotency_key()).await?;
    c.log
        .push(format!("released {released:?} (step said {held:?})"));
    Ok(())
}

#[saga_task]
async fn charge_card(c: &mut Checkout) -> Result<(), StepError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.log.push("card declined".into());
    Err("card declined".into())
}

#[tokio::main]
async fn main() {
    let checkout = saga! {
        name: "checkout",
        context: Checkout,
        step reserve_stock;
        step charge_card;
    };

    let mut ctx = Checkout {
        warehouse: Warehouse::start(1),
        log: Vec::new(),
    };
    let err = match checkout
        .run_with(&mut ctx, RunOptions::new().with_execution_id("order-1001"))
        .await
    {
        Ok(report) => {
            println!("unexpected success: {}", report.status.label());
            return;
        }
        Err(err) => err,
    };
    println!("error: {err}");
    for step in &err.report().steps {
        println!(
            "  {}: {} after {} attempt(s), last error: {}",
            step.name,
            step.status.label(),
            step.attempts,
            step.last_error.as_deref().unwrap_or("none")
        );
    }
    println!("effects: {:?}", ctx.log);
}
