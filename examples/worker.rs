//! Scaling out: worker processes sharing one PostgreSQL database.
//!
//! ```text
//! export SAGA_PG_URL=$(scripts/pg.sh start)
//! cargo run --features postgres --example worker -- work     # terminal 1
//! cargo run --features postgres --example worker -- work     # terminal 2
//! cargo run --features postgres --example worker -- submit 20
//! ```
//!
//! Both workers pick orders up at once (LISTEN/NOTIFY). Kill one of them
//! (Ctrl-C, or `kill -9`) in the middle: within a lease (5 s) the other
//! takes its orders over and finishes them from the log; a step that was
//! cut off runs again with the same idempotency key. Press Enter in a
//! worker's terminal to stop it gracefully (it finishes its orders first).

use std::time::Duration;

use saga_core::store::{PostgresOptions, PostgresStore};
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    number: u32,
    reserved: bool,
    charged: bool,
}

/// A call to a remote service. Each takes a while, so there is time to
/// kill a worker mid-order. A real step sends the idempotency key along,
/// so that the service ignores a repeated call (after a take-over).
async fn call(service: &str, key: String) -> Result<(), StepError> {
    println!("[pid {}] {service} key={key}", std::process::id());
    tokio::time::sleep(Duration::from_millis(700)).await;
    Ok(())
}

fn saga() -> Result<Saga<Order>, saga_core::BuildError> {
    Saga::builder("order")
        .step(
            Step::new_async("reserve", |o: &mut Order, info: &StepInfo<'_>| {
                o.reserved = true;
                Box::pin(call("reserve", info.idempotency_key()))
            })
            .undo_async(|o: &mut Order, _: Option<&()>, info: &StepInfo<'_>| {
                o.reserved = false;
                Box::pin(call("release", info.idempotency_key()))
            }),
        )
        .step(Step::new_async(
            "charge",
            |o: &mut Order, info: &StepInfo<'_>| {
                o.charged = true;
                Box::pin(call("charge", info.idempotency_key()))
            },
        ))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SAGA_PG_URL")
        .map_err(|_| "set SAGA_PG_URL, e.g. `export SAGA_PG_URL=$(scripts/pg.sh start)`")?;
    let store =
        PostgresStore::connect_with(&url, PostgresOptions::new().with_schema("example")).await?;
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_secs(5));
    engine.register(saga()?).await?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("submit") => {
            let count: u32 = args.get(1).map_or(Ok(10), |n| n.parse())?;
            for number in 0..count {
                let id = engine
                    .submit(
                        "order",
                        Order {
                            number,
                            ..Order::default()
                        },
                    )
                    .await?;
                println!("submitted order {number} as {id}");
            }
        }
        Some("work") => {
            let worker = Worker::new(engine)
                .with_concurrency(4)
                .with_poll_interval(Duration::from_secs(1))
                .spawn()?;
            println!("[pid {}] working; press Enter to stop", std::process::id());
            let mut line = String::new();
            tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await??;
            let stats = worker.shutdown(Duration::from_secs(30)).await;
            println!("[pid {}] stopped: {stats:?}", std::process::id());
        }
        _ => return Err("usage: worker work | worker submit [count]".into()),
    }
    Ok(())
}
