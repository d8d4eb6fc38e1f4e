//! A durable order saga on `sagas.db`: kill it half-way, run it again, and
//! it carries the order on from where it was.
//!
//! ```text
//! cargo run --example durable_order            # Ctrl-C (or kill -9) it mid-way
//! cargo run --example durable_order            # carries order-42 on and finishes it
//! cargo run --example durable_order -- fail    # a new order whose shipping fails: rolled back
//! ```
//!
//! Each step takes a second, so there is time to kill it. The log lives in
//! `sagas.db` in the current directory (`rm sagas.db*` to start over); look
//! inside with `sqlite3 sagas.db "SELECT * FROM events"`.

use std::time::Duration;

use saga_core::store::SqliteStore;
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo, WaitError, Worker};
use serde::{Deserialize, Serialize};

/// The order, as the saga carries it (and logs it, as JSON). Public, like
/// [`order_saga`], so that `tests/test_testkit.rs` tests this very saga.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub items: u32,
    /// Set by the shipping step when the warehouse refuses.
    pub fail_shipping: bool,
    pub reserved: bool,
    pub charge: Option<String>,
    pub shipped: bool,
}

/// Stands for a call to a remote service that takes a while.
async fn remote_call(what: &str, info: &StepInfo<'_>) {
    println!(
        "  {what} (attempt {}, idempotency key {})",
        info.attempt(),
        info.idempotency_key()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
}

pub fn order_saga() -> Result<Saga<Order>, saga_core::BuildError> {
    Saga::builder("order")
        .step(
            Step::new_async("reserve_stock", |o: &mut Order, info: &StepInfo<'_>| {
                Box::pin(async move {
                    remote_call(&format!("reserving {} items", o.items), info).await;
                    o.reserved = true;
                    Ok::<_, StepError>(())
                })
            })
            .undo_async(|o: &mut Order, _: Option<&()>, info: &StepInfo<'_>| {
                Box::pin(async move {
                    remote_call("releasing the reserved items", info).await;
                    o.reserved = false;
                    Ok::<_, StepError>(())
                })
            }),
        )
        .step(
            Step::new_async("charge_card", |o: &mut Order, info: &StepInfo<'_>| {
                Box::pin(async move {
                    remote_call("charging the card", info).await;
                    // The payment provider's charge id: the output, logged
                    // with the step, so a refund after a crash knows it.
                    let charge = format!("ch_{}", o.id);
                    o.charge = Some(charge.clone());
                    Ok::<_, StepError>(charge)
                })
            })
            .durable()
            .undo_async(
                |o: &mut Order, charge: Option<&String>, info: &StepInfo<'_>| {
                    let charge = charge.cloned();
                    Box::pin(async move {
                        // `None`: the charge may or may not have happened; the
                        // provider finds it by the idempotency key.
                        let what = match &charge {
                            Some(charge) => format!("refunding {charge}"),
                            None => "refunding whatever the key charged".to_owned(),
                        };
                        remote_call(&what, info).await;
                        o.charge = None;
                        Ok::<_, StepError>(())
                    })
                },
            ),
        )
        // The pivot: a parcel that left cannot be called back, so once it
        // ships the order only goes forward (a failing email is retried,
        // never a reason to refund). The test kit found the earlier version,
        // with `ship` as an ordinary step, refunding shipped orders.
        .pivot(Step::new_async(
            "ship",
            |o: &mut Order, info: &StepInfo<'_>| {
                Box::pin(async move {
                    remote_call("asking the warehouse to ship", info).await;
                    if o.fail_shipping {
                        return Err(StepError::new("the warehouse has no courier today"));
                    }
                    o.shipped = true;
                    Ok(())
                })
            },
        ))
        .step(Step::new_async(
            "email",
            |_: &mut Order, info: &StepInfo<'_>| {
                Box::pin(async move {
                    remote_call("emailing the customer", info).await;
                    Ok::<_, StepError>(())
                })
            },
        ))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fail = std::env::args().nth(1).as_deref() == Some("fail");
    let store = SqliteStore::open("sagas.db")?;
    // A short lease, so that a rerun soon takes over a killed run's orders.
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_secs(2));
    engine.register(order_saga()?).await?;

    // The one call a service makes at startup: a worker carries on
    // whatever an earlier, killed run left unfinished (once its lease
    // expires), with no `recover()` loop here. It looks for expired
    // leases every second (5 s by default).
    let worker = Worker::new(engine.clone())
        .with_poll_interval(Duration::from_secs(1))
        .spawn()?;

    // Then the order of this run. Its id is the order's: starting it again
    // after a crash names the same execution and does not charge twice.
    let id = if fail { "order-43" } else { "order-42" };
    let order = Order {
        id: id.to_owned(),
        items: 2,
        fail_shipping: fail,
        ..Order::default()
    };
    match engine.get(&id.into()).await? {
        Some(view) if view.record.status.is_finished() => {
            println!(
                "{id} already ended {} ({} events in its log); `rm sagas.db*` to start over",
                view.record.status,
                view.events.len()
            );
            worker.shutdown(Duration::ZERO).await;
            return Ok(());
        }
        Some(_) => {
            println!("{id} was left unfinished by an earlier run; the worker carries it on:")
        }
        None => println!("starting {id} (kill me now and run me again):"),
    }
    let id = engine.start_with_id("order", id, order).await?;
    // `wait` gives what an in-memory run gives: the report, or the saga's
    // error (compensated, stuck, ...) with the report in it.
    match engine.wait(&id).await {
        Ok(_) => println!("{id} completed"),
        Err(WaitError::Saga(failed)) => {
            println!("{id} ended {}: {failed}", failed.report().status);
        }
        Err(other) => return Err(other.into()),
    }
    // Lets any other run it took over finish (or releases it).
    worker.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
