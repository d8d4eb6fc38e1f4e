//! An axum service whose orders run as a durable saga on SQLite.
//!
//! ```text
//! cargo run -p axum-orders -- --listen 127.0.0.1:3000 --store orders.db \
//!     --payment-url http://127.0.0.1:3001
//! curl -i -X POST localhost:3000/orders -H 'content-type: application/json' \
//!     -d '{"id": "order-1", "amount": 1250}'
//! curl localhost:3000/orders/order-1
//! ```
//!
//! `POST /orders` starts the saga under the order's id (a repeated POST
//! names the same execution), `GET /orders/{id}` returns its report. The
//! saga's steps reach the payment service through the engine's
//! dependencies ([`saga::Services`]). A [`Worker`] started with the service
//! carries on whatever a killed process left unfinished: on SQLite at once
//! (the dead process no longer holds the file lock that proves an owner
//! alive), on a shared store such as PostgreSQL once its lease has
//! expired. SIGTERM or Ctrl-C stops the server, then gives the runs in
//! flight a grace period to finish before the process exits.
//!
//! Settings, each an argument or else an environment variable:
//!
//! | argument        | variable             | default                 |
//! |-----------------|----------------------|-------------------------|
//! | `--listen`      | `ORDERS_LISTEN`      | `127.0.0.1:3000`        |
//! | `--store`       | `ORDERS_STORE`       | `orders.db`             |
//! | `--payment-url` | `PAYMENT_URL`        | `http://127.0.0.1:3001` |
//! | `--lease-ttl-ms`| `ORDERS_LEASE_TTL_MS`| `10000`                 |
//! | `--poll-ms`     | `ORDERS_POLL_MS`     | `5000`                  |
//! | `--grace-ms`    | `ORDERS_GRACE_MS`    | `10000`                 |

mod api;
mod payments;
mod saga;

use std::error::Error;
use std::io::Write;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use saga_core::store::SqliteStore;
use saga_core::{EngineError, ExecutionId, ExecutionStatus, SagaEngine, Worker};

use crate::payments::PaymentsClient;
use crate::saga::{Services, order_saga};

/// The service's settings.
#[derive(Debug)]
struct Config {
    listen: String,
    store: String,
    payment_url: String,
    /// How long a lease holds its executions when nothing proves its
    /// owner dead (on SQLite a killed process is proved dead at once, by
    /// its file lock; a stalled one is not).
    lease_ttl: Duration,
    /// How often the worker looks for expired leases.
    poll: Duration,
    /// How long shutdown waits for the worker's runs.
    grace: Duration,
}

impl Config {
    /// Reads `--name value` arguments, then `VARIABLE`s, then defaults.
    fn read() -> Result<Self, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        const KNOWN: [&str; 6] = [
            "--listen",
            "--store",
            "--payment-url",
            "--lease-ttl-ms",
            "--poll-ms",
            "--grace-ms",
        ];
        for pair in args.chunks(2) {
            if !KNOWN.contains(&pair[0].as_str()) {
                return Err(format!(
                    "unexpected argument `{}`; expected one of {}, each followed by a value",
                    pair[0],
                    KNOWN.join(", ")
                ));
            }
            if pair.len() < 2 {
                return Err(format!("`{}` needs a value", pair[0]));
            }
        }
        let setting = |arg: &str, var: &str, default: &str| -> String {
            args.chunks(2)
                .find(|pair| pair[0] == arg)
                .map(|pair| pair[1].clone())
                .or_else(|| std::env::var(var).ok())
                .unwrap_or_else(|| default.to_owned())
        };
        let millis = |arg: &str, var: &str, default: &str| -> Result<Duration, String> {
            let value = setting(arg, var, default);
            value
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("`{arg}` ({var}) must be milliseconds, not `{value}`"))
        };
        Ok(Config {
            listen: setting("--listen", "ORDERS_LISTEN", "127.0.0.1:3000"),
            store: setting("--store", "ORDERS_STORE", "orders.db"),
            payment_url: setting("--payment-url", "PAYMENT_URL", "http://127.0.0.1:3001"),
            lease_ttl: millis("--lease-ttl-ms", "ORDERS_LEASE_TTL_MS", "10000")?,
            poll: millis("--poll-ms", "ORDERS_POLL_MS", "5000")?,
            grace: millis("--grace-ms", "ORDERS_GRACE_MS", "10000")?,
        })
    }
}

#[tokio::main]
async fn main() {
    let config = match Config::read() {
        Ok(config) => config,
        Err(usage) => {
            eprintln!("axum-orders: {usage}");
            std::process::exit(2);
        }
    };
    // Each error says what failed and how to fix it, in its own words
    // (`Display`): `main` returning it would print its `Debug` form.
    if let Err(error) = serve(config).await {
        eprintln!("axum-orders: {error}");
        std::process::exit(1);
    }
}

/// Runs the service until it is asked to stop.
async fn serve(config: Config) -> Result<(), Box<dyn Error>> {
    let services = Services {
        payments: PaymentsClient::new(&config.payment_url),
    };
    let engine = SagaEngine::new(SqliteStore::open(&config.store)?)
        .with_lease_ttl(config.lease_ttl)
        .with_dependencies(services);
    engine.register(order_saga()?).await?;

    // The one call that carries runs on: it takes over what a killed
    // process left, at once here (on SQLite its released file lock proves
    // it dead; docs/OPERATIONS.md), elsewhere once its lease expires.
    let worker = Worker::new(engine.clone())
        .with_poll_interval(config.poll)
        .spawn()?;

    let app = Router::new()
        .route("/orders", post(api::create_order))
        .route("/orders/{id}", get(api::get_order))
        .with_state(engine.clone());
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    // The address actually bound (port 0 picks one), for whoever started us.
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;

    axum::serve(listener, app)
        .with_graceful_shutdown(stop_requested())
        .await?;
    // No request comes in any more: the worker's shutdown lets the runs in
    // flight finish, its own and those the requests started, for up to the
    // grace period, then releases the others' leases for the next start.
    // Only for the messages: a store that fails here (restarting, say)
    // must not skip the worker's shutdown, which lets the runs finish.
    let in_flight = in_flight(&engine).await.unwrap_or_else(|error| {
        eprintln!("listing the runs in flight failed ({error}); stopping all the same");
        Vec::new()
    });
    println!(
        "stopping: waiting up to {:?} for {} runs",
        config.grace,
        in_flight.len()
    );
    std::io::stdout().flush()?;
    let stats = worker.shutdown(config.grace).await;
    let mut left = 0;
    for id in &in_flight {
        // Unread (the store failing): counted as left.
        let finished =
            matches!(engine.get(id).await, Ok(Some(view)) if view.record.status.is_finished());
        if !finished {
            left += 1;
        }
    }
    println!(
        "stopped: {} runs finished, {left} left to the next start; \
         the worker claimed {} executions, released {}",
        in_flight.len() - left,
        stats.claimed,
        stats.released
    );
    Ok(())
}

/// The unfinished executions this process runs (for the shutdown's
/// messages).
async fn in_flight(engine: &SagaEngine) -> Result<Vec<ExecutionId>, EngineError> {
    let mut ids = Vec::new();
    for status in [ExecutionStatus::Running, ExecutionStatus::Compensating] {
        for record in engine.list(Some(status)).await? {
            if record.owner.as_deref() == Some(engine.owner()) {
                ids.push(record.id);
            }
        }
    }
    Ok(ids)
}

/// Resolves on Ctrl-C, or on SIGTERM on Unix (what `docker stop` and
/// Kubernetes send).
async fn stop_requested() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: wait for SIGTERM only.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
