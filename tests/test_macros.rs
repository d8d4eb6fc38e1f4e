//! A saga declared with `saga!` and `#[saga_task]` runs exactly like the
//! same saga written with the builder: same effects in the same order, same
//! report (statuses, attempts, compensation attempts), same errors. Each
//! scenario also asserts its expected outcome, so that the two cannot agree
//! on a wrong answer.

use std::time::Duration;

use saga_core::{
    ExecutionStatus, RetryPolicy, Saga, SagaError, SagaReport, Step, StepError, StepInfo,
    StepStatus, saga, saga_task,
};

// ---------------------------------------------------------------- sync ----

#[derive(Default, Clone)]
struct Shop {
    log: Vec<String>,
    /// `charge` fails with a retryable error this many times first.
    busy: u32,
    /// `charge` then fails for good.
    decline: bool,
    /// `send_receipt` fails for good.
    mail_down: bool,
    charge_calls: u32,
}

#[saga_task]
fn validate(shop: &Shop) -> Result<(), StepError> {
    if shop.log.is_empty() {
        Ok(())
    } else {
        Err("dirty shop".into())
    }
}

#[saga_task(undo = cancel_order, metadata(team = "orders"))]
fn create_order(shop: &mut Shop) -> Result<u64, StepError> {
    shop.log.push("create_order".into());
    Ok(42)
}

#[saga_task]
fn cancel_order(shop: &mut Shop, order: Option<&u64>) -> Result<(), StepError> {
    shop.log.push(format!("cancel_order {order:?}"));
    Ok(())
}

#[saga_task(retry(attempts = 5, backoff = "1s"))]
fn charge(shop: &mut Shop, info: &StepInfo<'_>) -> Result<String, StepError> {
    shop.charge_calls += 1;
    shop.log.push(format!("charge #{}", info.attempt()));
    if shop.charge_calls <= shop.busy {
        return Err(StepError::new("gateway busy"));
    }
    if shop.decline {
        return Err(StepError::new("card declined").permanent());
    }
    Ok(format!("pay-{}", info.step()))
}

#[saga_task]
fn refund(shop: &mut Shop, payment: Option<&String>) -> Result<(), StepError> {
    shop.log.push(format!("refund {payment:?}"));
    Ok(())
}

#[saga_task(pivot)]
fn ship(shop: &mut Shop) -> Result<(), StepError> {
    shop.log.push("ship".into());
    Ok(())
}

#[saga_task(name = "receipt")]
fn send_receipt(shop: &mut Shop) -> Result<(), StepError> {
    shop.log.push("receipt".into());
    if shop.mail_down {
        return Err(StepError::new("mail down"));
    }
    Ok(())
}

fn macro_shop() -> Saga<Shop> {
    saga! {
        name: "order",
        context: Shop,
        step validate;
        step create_order;
        // `saga!` overrides the attribute's 5 attempts and 1 s backoff.
        step charge => undo refund, retry 3, backoff 1ms, metadata(team = "payments");
        step ship;
        step send_receipt, retry 2, backoff 1ms;
    }
}

fn builder_shop() -> Saga<Shop> {
    Saga::builder("order")
        .step(Step::new("validate", |s: &mut Shop, _: &StepInfo<'_>| {
            validate(s)
        }))
        .step(
            Step::new("create_order", |s: &mut Shop, _: &StepInfo<'_>| {
                create_order(s)
            })
            .undo(|s: &mut Shop, o: Option<&u64>, _: &StepInfo<'_>| cancel_order(s, o))
            .metadata("team", "orders"),
        )
        .step(
            Step::new("charge", |s: &mut Shop, i: &StepInfo<'_>| charge(s, i))
                .undo(|s: &mut Shop, p: Option<&String>, _: &StepInfo<'_>| refund(s, p))
                .retry(RetryPolicy::attempts(3).with_backoff(Duration::from_millis(1)))
                .metadata("team", "payments"),
        )
        .pivot(Step::new("ship", |s: &mut Shop, _: &StepInfo<'_>| ship(s)))
        .step(
            Step::new("receipt", |s: &mut Shop, _: &StepInfo<'_>| send_receipt(s))
                .retry(RetryPolicy::attempts(2).with_backoff(Duration::from_millis(1))),
        )
        .build()
        .unwrap()
}

/// What a run shows a user, minus ids and durations.
#[derive(Debug, PartialEq)]
struct Seen {
    effects: Vec<String>,
    status: ExecutionStatus,
    steps: Vec<(String, StepStatus, u32, u32)>,
    error: Option<String>,
    stuck: bool,
}

fn seen(effects: Vec<String>, result: Result<SagaReport, SagaError>) -> Seen {
    let (report, error, stuck) = match &result {
        Ok(report) => (report.clone(), None, false),
        Err(e) => (e.report().clone(), Some(e.to_string()), e.is_stuck()),
    };
    Seen {
        effects,
        status: report.status,
        steps: report
            .steps
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    s.status,
                    s.attempts,
                    s.compensation_attempts,
                )
            })
            .collect(),
        error,
        stuck,
    }
}

fn run_shop(saga: &Saga<Shop>, start: &Shop) -> Seen {
    let mut shop = start.clone();
    let result = saga.run_blocking(&mut shop);
    seen(shop.log, result)
}

/// Runs both sagas on `start` and returns what they showed, after checking
/// that it is the same.
fn twins(start: Shop) -> Seen {
    let by_macro = run_shop(&macro_shop(), &start);
    let by_builder = run_shop(&builder_shop(), &start);
    assert_eq!(by_macro, by_builder);
    by_macro
}

fn statuses(seen: &Seen) -> Vec<(&str, StepStatus)> {
    seen.steps.iter().map(|s| (&*s.0, s.1)).collect()
}

#[test]
fn same_shape_as_the_builder() {
    assert_eq!(macro_shop().shape(), builder_shop().shape());
    assert_eq!(macro_shop().name(), "order");
}

#[test]
fn sync_happy_path() {
    let seen = twins(Shop::default());
    assert_eq!(seen.status, ExecutionStatus::Completed);
    assert_eq!(
        seen.effects,
        ["create_order", "charge #1", "ship", "receipt"]
    );
    assert_eq!(seen.error, None);
}

#[test]
fn sync_retry_then_success() {
    let seen = twins(Shop {
        busy: 2,
        ..Shop::default()
    });
    assert_eq!(seen.status, ExecutionStatus::Completed);
    assert_eq!(
        seen.steps[2],
        ("charge".into(), StepStatus::Succeeded, 3, 0)
    );
}

#[test]
fn sync_failure_compensates_in_reverse() {
    let seen = twins(Shop {
        decline: true,
        ..Shop::default()
    });
    assert_eq!(
        seen.effects,
        ["create_order", "charge #1", "cancel_order Some(42)"]
    );
    assert_eq!(
        seen.error.as_deref(),
        Some(
            "saga `order` failed at step `charge` and was rolled back (compensated: create_order)"
        )
    );
    assert_eq!(
        statuses(&seen)[1],
        ("create_order", StepStatus::Compensated)
    );
}

#[test]
fn sync_retries_exhausted() {
    let seen = twins(Shop {
        busy: 10,
        ..Shop::default()
    });
    assert_eq!(
        seen.steps[2].2, 3,
        "the saga's `retry 3` wins over the attribute's 5"
    );
    assert!(seen.error.is_some());
    assert!(!seen.stuck);
}

#[test]
fn sync_failure_after_the_pivot_is_stuck() {
    let seen = twins(Shop {
        mail_down: true,
        ..Shop::default()
    });
    assert!(seen.stuck);
    assert_eq!(seen.steps[4], ("receipt".into(), StepStatus::Failed, 2, 0));
    assert_eq!(
        seen.effects,
        ["create_order", "charge #1", "ship", "receipt", "receipt"]
    );
}

#[test]
fn functions_stay_callable() {
    let mut shop = Shop::default();
    assert_eq!(create_order(&mut shop).unwrap(), 42);
    cancel_order(&mut shop, None).unwrap();
    assert_eq!(shop.log, ["create_order", "cancel_order None"]);
}

// --------------------------------------------------------------- async ----

#[derive(Default, Clone)]
struct Trip {
    log: Vec<String>,
    /// `book_flight` hangs on these attempts (and times out).
    hang: Vec<u32>,
    /// `book_hotel` fails for good.
    no_rooms: bool,
}

#[saga_task(undo = cancel_flight, timeout = "10s")]
async fn book_flight(trip: &mut Trip, info: &StepInfo<'_>) -> Result<String, StepError> {
    tokio::task::yield_now().await;
    if trip.hang.contains(&info.attempt()) {
        trip.log.push(format!("flight #{} hangs", info.attempt()));
        std::future::pending::<()>().await;
    }
    trip.log.push(format!("flight #{}", info.attempt()));
    Ok("AF123".to_owned())
}

#[saga_task]
async fn cancel_flight(trip: &mut Trip, flight: Option<&String>) -> Result<(), StepError> {
    tokio::task::yield_now().await;
    trip.log.push(format!("cancel flight {flight:?}"));
    Ok(())
}

#[saga_task(compensate = cancel_hotel)]
async fn book_hotel(trip: &mut Trip) -> Result<u32, StepError> {
    tokio::task::yield_now().await;
    if trip.no_rooms {
        return Err("no rooms".into());
    }
    trip.log.push("hotel".into());
    Ok(7)
}

#[saga_task]
fn cancel_hotel(trip: &mut Trip, room: Option<&u32>) -> Result<(), StepError> {
    trip.log.push(format!("cancel hotel {room:?}"));
    Ok(())
}

#[saga_task]
fn notify(trip: &mut Trip) -> Result<(), StepError> {
    trip.log.push("notify".into());
    Ok(())
}

fn macro_trip() -> Saga<Trip> {
    saga! {
        name: "trip",
        context: Trip,
        step notify;
        // The saga's 20 ms timeout overrides the attribute's 10 s.
        step book_flight, retry 2, backoff 1ms, timeout 20ms;
        step book_hotel;
    }
}

fn builder_trip() -> Saga<Trip> {
    Saga::builder("trip")
        .step(Step::new("notify", |t: &mut Trip, _: &StepInfo<'_>| {
            notify(t)
        }))
        .step(
            Step::new_async("book_flight", |t, i| Box::pin(book_flight(t, i)))
                .undo_async(|t, f, _| Box::pin(cancel_flight(t, f)))
                .retry(RetryPolicy::attempts(2).with_backoff(Duration::from_millis(1)))
                .timeout(Duration::from_millis(20)),
        )
        .step(
            Step::new_async("book_hotel", |t, _| Box::pin(book_hotel(t)))
                .undo(|t: &mut Trip, r: Option<&u32>, _: &StepInfo<'_>| cancel_hotel(t, r)),
        )
        .build()
        .unwrap()
}

async fn run_trip(saga: &Saga<Trip>, start: &Trip) -> Seen {
    let mut trip = start.clone();
    let result = saga.run(&mut trip).await;
    seen(trip.log, result)
}

async fn trip_twins(start: Trip) -> Seen {
    let by_macro = run_trip(&macro_trip(), &start).await;
    let by_builder = run_trip(&builder_trip(), &start).await;
    assert_eq!(by_macro, by_builder);
    // The blocking entry point drives the same saga the same way (on a
    // helper thread, since this runs inside a runtime).
    let mut trip = start.clone();
    let result = macro_trip().run_blocking(&mut trip);
    assert_eq!(seen(trip.log, result), by_macro);
    by_macro
}

#[test]
fn async_shape_matches() {
    assert_eq!(macro_trip().shape(), builder_trip().shape());
    assert!(macro_trip().shape()[1].is_async);
    assert!(!macro_trip().shape()[0].is_async);
}

#[tokio::test]
async fn async_happy_path() {
    let seen = trip_twins(Trip::default()).await;
    assert_eq!(seen.status, ExecutionStatus::Completed);
    assert_eq!(seen.effects, ["notify", "flight #1", "hotel"]);
}

#[tokio::test]
async fn async_timeout_then_retry() {
    let seen = trip_twins(Trip {
        hang: vec![1],
        ..Trip::default()
    })
    .await;
    assert_eq!(seen.status, ExecutionStatus::Completed);
    assert_eq!(
        seen.effects,
        ["notify", "flight #1 hangs", "flight #2", "hotel"]
    );
    assert_eq!(seen.steps[1].2, 2);
}

#[tokio::test]
async fn async_failure_compensates_with_the_output() {
    let seen = trip_twins(Trip {
        no_rooms: true,
        ..Trip::default()
    })
    .await;
    assert_eq!(
        seen.effects,
        ["notify", "flight #1", "cancel flight Some(\"AF123\")"]
    );
    assert_eq!(
        seen.error.as_deref(),
        Some(
            "saga `trip` failed at step `book_hotel` and was rolled back (compensated: book_flight)"
        )
    );
}

#[tokio::test]
async fn async_unknown_outcome_compensates_with_none() {
    let seen = trip_twins(Trip {
        hang: vec![1, 2],
        ..Trip::default()
    })
    .await;
    // Both attempts timed out: the flight may be booked, and the
    // compensation is told it does not know what was booked.
    assert_eq!(
        seen.effects,
        [
            "notify",
            "flight #1 hangs",
            "flight #2 hangs",
            "cancel flight None"
        ]
    );
    assert_eq!(statuses(&seen)[1], ("book_flight", StepStatus::Compensated));
    assert!(seen.error.is_some());
}

// ------------------------------------------------------------- options ----

#[derive(Default, Clone)]
struct Counter {
    log: Vec<String>,
    /// `flaky` fails with this message this many times first.
    failures: Vec<&'static str>,
}

fn is_transient(e: &StepError) -> bool {
    e.to_string().starts_with("transient")
}

#[saga_task(metadata(owner = "attr", tier = "1"))]
fn tick(c: &mut Counter, info: &StepInfo<'_>) -> Result<(), StepError> {
    c.log.push(format!("tick {}", info.step()));
    Ok(())
}

#[saga_task(retry(attempts = 9, on = is_transient))]
fn flaky(c: &mut Counter, info: &StepInfo<'_>) -> Result<usize, StepError> {
    c.log.push(format!("flaky #{}", info.attempt()));
    if c.failures.is_empty() {
        return Ok(c.log.len());
    }
    // Not retryable-marked: only the predicate can retry it.
    Err(c.failures.remove(0).into())
}

#[saga_task]
fn peek(c: &Counter) -> Result<usize, StepError> {
    Ok(c.log.len())
}

fn macro_options() -> Saga<Counter> {
    saga! {
        name: "options",
        context: Counter,
        step tick;
        step tick, name "tick_again", metadata(owner = "saga");
        step flaky, retry forever, backoff 1ms, max_backoff 2ms;
        step peek;
    }
}

fn builder_options() -> Saga<Counter> {
    Saga::builder("options")
        .step(
            Step::new("tick", |c: &mut Counter, i: &StepInfo<'_>| tick(c, i))
                .metadata("owner", "attr")
                .metadata("tier", "1"),
        )
        .step(
            Step::new("tick_again", |c: &mut Counter, i: &StepInfo<'_>| tick(c, i))
                .metadata("owner", "saga")
                .metadata("tier", "1"),
        )
        .step(
            Step::new("flaky", |c: &mut Counter, i: &StepInfo<'_>| flaky(c, i)).retry(
                RetryPolicy::forever()
                    .with_backoff(Duration::from_millis(1))
                    .with_max_backoff(Duration::from_millis(2))
                    .retry_if(is_transient),
            ),
        )
        .step(Step::new("peek", |c: &mut Counter, _: &StepInfo<'_>| {
            peek(c)
        }))
        .build()
        .unwrap()
}

fn option_twins(start: Counter) -> Seen {
    let run = |saga: Saga<Counter>| {
        let mut c = start.clone();
        let result = saga.run_blocking(&mut c);
        seen(c.log, result)
    };
    let by_macro = run(macro_options());
    assert_eq!(by_macro, run(builder_options()));
    by_macro
}

#[test]
fn options_shape_names_and_metadata() {
    let shape = macro_options().shape();
    assert_eq!(shape, builder_options().shape());
    let names: Vec<&str> = shape.iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["tick", "tick_again", "flaky", "peek"]);
    // The saga's `owner` replaces the attribute's; `tier` stays.
    assert_eq!(shape[1].metadata["owner"], "saga");
    assert_eq!(shape[1].metadata["tier"], "1");
    assert_eq!(shape[0].metadata["owner"], "attr");
}

#[test]
fn retry_forever_with_the_attribute_predicate() {
    let seen = option_twins(Counter {
        failures: vec!["transient 1", "transient 2", "transient 3", "transient 4"],
        ..Counter::default()
    });
    assert_eq!(seen.status, ExecutionStatus::Completed);
    assert_eq!(seen.steps[2].2, 5);
    assert_eq!(seen.effects[..2], ["tick tick", "tick tick_again"]);
}

#[test]
fn the_predicate_stops_retries() {
    let seen = option_twins(Counter {
        failures: vec!["transient", "fatal", "transient"],
        ..Counter::default()
    });
    assert_eq!(seen.steps[2].2, 2);
    assert_eq!(
        seen.error.as_deref(),
        Some("saga `options` failed at step `flaky` and was rolled back (nothing to compensate)")
    );
}

// ---------------------------------------------------- compensation retry ----

#[derive(Default, Clone)]
struct Wallet {
    log: Vec<String>,
    /// `unpay` fails this many times first.
    refund_failures: u32,
}

#[saga_task(undo = unpay, undo_retry(attempts = 4, backoff = "1ms", max_backoff = "2ms"))]
fn pay(w: &mut Wallet) -> Result<u32, StepError> {
    w.log.push("pay".into());
    Ok(10)
}

#[saga_task]
fn unpay(w: &mut Wallet, amount: Option<&u32>) -> Result<(), StepError> {
    if w.refund_failures > 0 {
        w.refund_failures -= 1;
        w.log.push("refund fails".into());
        return Err("bank offline".into());
    }
    w.log.push(format!("refund {amount:?}"));
    Ok(())
}

#[saga_task]
fn overdraw(_: &mut Wallet) -> Result<(), StepError> {
    Err("insufficient funds".into())
}

fn macro_wallet(override_to_two: bool) -> Saga<Wallet> {
    if override_to_two {
        saga! {
            name: "wallet",
            context: Wallet,
            step pay, undo_retry 2;
            step overdraw;
        }
    } else {
        saga! {
            name: "wallet",
            context: Wallet,
            step pay;
            step overdraw;
        }
    }
}

fn builder_wallet(undo_attempts: u32) -> Saga<Wallet> {
    Saga::builder("wallet")
        .step(
            Step::new("pay", |w: &mut Wallet, _: &StepInfo<'_>| pay(w))
                .undo(|w: &mut Wallet, a: Option<&u32>, _: &StepInfo<'_>| unpay(w, a))
                .undo_retry(
                    saga_core::default_undo_retry()
                        .with_max_attempts(undo_attempts)
                        .with_backoff(Duration::from_millis(1))
                        .with_max_backoff(Duration::from_millis(2)),
                ),
        )
        .step(Step::new("overdraw", |w: &mut Wallet, _: &StepInfo<'_>| {
            overdraw(w)
        }))
        .build()
        .unwrap()
}

fn wallet_twins(by_macro: Saga<Wallet>, by_builder: Saga<Wallet>) -> Seen {
    let start = Wallet {
        refund_failures: 2,
        ..Wallet::default()
    };
    let run = |saga: Saga<Wallet>| {
        let mut w = start.clone();
        let result = saga.run_blocking(&mut w);
        seen(w.log, result)
    };
    let by_macro = run(by_macro);
    assert_eq!(by_macro, run(by_builder));
    by_macro
}

#[test]
fn compensation_retries_from_the_attribute() {
    let seen = wallet_twins(macro_wallet(false), builder_wallet(4));
    assert!(!seen.stuck);
    assert_eq!(seen.steps[0], ("pay".into(), StepStatus::Compensated, 1, 3));
    assert_eq!(
        seen.effects,
        ["pay", "refund fails", "refund fails", "refund Some(10)"]
    );
}

#[test]
fn compensation_retries_overridden_by_the_saga() {
    let seen = wallet_twins(macro_wallet(true), builder_wallet(2));
    assert!(seen.stuck, "two attempts cannot outlast two failures");
    assert_eq!(seen.steps[0].3, 2);
}

// ------------------------------------------------------------ parallel ----

/// A fan-out: packing, then stock and courier at once, then a notice.
#[derive(Default)]
struct Fan {
    log: std::sync::Mutex<Vec<String>>,
    /// Both branches wait here: run one after the other, the first would
    /// wait forever.
    barrier: Option<std::sync::Arc<tokio::sync::Barrier>>,
    courier_down: bool,
}

impl Fan {
    fn push(&self, effect: impl Into<String>) {
        self.log.lock().unwrap().push(effect.into());
    }

    async fn meet(&self) {
        if let Some(barrier) = &self.barrier {
            barrier.wait().await;
        }
    }
}

#[saga_task(undo = unpack)]
fn pack(fan: &mut Fan) -> Result<(), StepError> {
    fan.log.get_mut().unwrap().push("pack".into());
    Ok(())
}

#[saga_task]
fn unpack(fan: &mut Fan) -> Result<(), StepError> {
    fan.log.get_mut().unwrap().push("unpack".into());
    Ok(())
}

#[saga_task(undo = release_stock, retry(attempts = 2))]
async fn reserve_stock(fan: &Fan, info: &StepInfo<'_>) -> Result<u32, StepError> {
    fan.meet().await;
    fan.push(format!("reserve_stock #{}", info.attempt()));
    Ok(7)
}

#[saga_task]
async fn release_stock(fan: &Fan, units: Option<&u32>) -> Result<(), StepError> {
    fan.push(format!("release_stock {units:?}"));
    Ok(())
}

#[saga_task]
async fn book_courier(fan: &Fan) -> Result<String, StepError> {
    fan.meet().await;
    if fan.courier_down {
        return Err("courier down".into());
    }
    fan.push("book_courier");
    Ok("c-1".into())
}

#[saga_task]
fn cancel_courier(fan: &Fan, id: Option<&String>) -> Result<(), StepError> {
    fan.push(format!("cancel_courier {id:?}"));
    Ok(())
}

#[saga_task]
fn notify_fan(fan: &Fan) -> Result<(), StepError> {
    fan.push("notify");
    Ok(())
}

fn macro_fan() -> Saga<Fan> {
    saga! {
        name: "fan",
        context: Fan,
        step pack;
        parallel {
            step reserve_stock, retry 3;
            step book_courier => undo cancel_courier, metadata(team = "logistics");
        }
        step notify_fan;
    }
}

fn builder_fan() -> Saga<Fan> {
    Saga::builder("fan")
        .step(
            Step::new("pack", |f: &mut Fan, _: &StepInfo<'_>| pack(f))
                .undo(|f: &mut Fan, _: Option<&()>, _: &StepInfo<'_>| unpack(f)),
        )
        .parallel(
            saga_core::Parallel::new()
                .step(
                    Step::shared_async("reserve_stock", |f: &Fan, i: &StepInfo<'_>| {
                        Box::pin(reserve_stock(f, i))
                    })
                    .undo_shared_async(|f: &Fan, u: Option<&u32>, _: &StepInfo<'_>| {
                        Box::pin(release_stock(f, u))
                    })
                    .retry(RetryPolicy::attempts(3)),
                )
                .step(
                    Step::shared_async("book_courier", |f: &Fan, _: &StepInfo<'_>| {
                        Box::pin(book_courier(f))
                    })
                    .undo_shared(|f: &Fan, id: Option<&String>, _: &StepInfo<'_>| {
                        cancel_courier(f, id)
                    })
                    .metadata("team", "logistics"),
                ),
        )
        .step(Step::shared("notify_fan", |f: &Fan, _: &StepInfo<'_>| {
            notify_fan(f)
        }))
        .build()
        .unwrap()
}

async fn run_fan(saga: &Saga<Fan>, courier_down: bool) -> Seen {
    let mut fan = Fan {
        barrier: Some(std::sync::Arc::new(tokio::sync::Barrier::new(2))),
        courier_down,
        ..Fan::default()
    };
    let result = tokio::time::timeout(Duration::from_secs(10), saga.run(&mut fan))
        .await
        .expect("the branches did not run concurrently");
    seen(fan.log.into_inner().unwrap(), result)
}

async fn fan_twins(courier_down: bool) -> Seen {
    let by_macro = run_fan(&macro_fan(), courier_down).await;
    let by_builder = run_fan(&builder_fan(), courier_down).await;
    assert_eq!(by_macro, by_builder);
    // The blocking entry point runs the async branches at once too (they
    // meet at the barrier), on a helper thread since this runs inside a
    // runtime.
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut fan = Fan {
            barrier: Some(std::sync::Arc::new(tokio::sync::Barrier::new(2))),
            courier_down,
            ..Fan::default()
        };
        let result = macro_fan().run_blocking(&mut fan);
        let _ = done.send(seen(fan.log.into_inner().unwrap(), result));
    });
    let blocking = outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("under `run_blocking` the branches did not run concurrently");
    assert_eq!(blocking, by_macro);
    by_macro
}

#[test]
fn parallel_shape_matches() {
    let shape = macro_fan().shape();
    assert_eq!(shape, builder_fan().shape());
    let groups: Vec<_> = shape.iter().map(|s| (&*s.name, s.group)).collect();
    assert_eq!(
        groups,
        [
            ("pack", None),
            ("reserve_stock", Some(0)),
            ("book_courier", Some(0)),
            ("notify_fan", None),
        ]
    );
    assert_eq!(macro_fan().to_mermaid(), builder_fan().to_mermaid());
}

#[tokio::test(flavor = "current_thread")]
async fn parallel_branches_meet_at_a_barrier() {
    let seen = fan_twins(false).await;
    assert_eq!(seen.status, ExecutionStatus::Completed);
    let mut group = seen.effects[1..3].to_vec();
    group.sort();
    assert_eq!(group, ["book_courier", "reserve_stock #1"]);
    assert_eq!(
        (seen.effects[0].as_str(), seen.effects[3].as_str()),
        ("pack", "notify")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn parallel_failing_branch_rolls_back_its_sibling_then_earlier_steps() {
    let seen = fan_twins(true).await;
    assert_eq!(seen.status, ExecutionStatus::Compensated);
    assert_eq!(
        seen.effects,
        [
            "pack",
            "reserve_stock #1",
            "release_stock Some(7)",
            "unpack"
        ]
    );
    assert_eq!(
        statuses(&seen),
        [
            ("pack", StepStatus::Compensated),
            ("reserve_stock", StepStatus::Compensated),
            ("book_courier", StepStatus::Failed),
            ("notify_fan", StepStatus::Pending),
        ]
    );
    assert_eq!(
        seen.error.as_deref(),
        Some(
            "saga `fan` failed at step `book_courier` and was rolled back (compensated: reserve_stock, pack)"
        )
    );
}

// ------------------------------------------- async, other error types ----

/// Async tasks whose error is not a `StepError`: the expansion converts it
/// inside the one future it boxes, for a step and for a compensation.
#[derive(Default)]
struct Vault {
    log: Vec<String>,
    /// `close_vault` fails.
    jammed: bool,
}

#[saga_task(undo = close_vault)]
async fn open_vault(vault: &mut Vault) -> Result<u32, std::io::Error> {
    tokio::task::yield_now().await;
    vault.log.push("open".into());
    Ok(3)
}

#[saga_task]
async fn close_vault(vault: &mut Vault, code: Option<&u32>) -> Result<(), std::io::Error> {
    tokio::task::yield_now().await;
    if vault.jammed {
        return Err(std::io::Error::other("the door is jammed"));
    }
    vault.log.push(format!("close {code:?}"));
    Ok(())
}

#[saga_task]
async fn take_gold(_: &mut Vault) -> Result<(), std::io::Error> {
    tokio::task::yield_now().await;
    Err(std::io::Error::other("the alarm went off"))
}

fn vault_saga() -> Saga<Vault> {
    saga! {
        name: "vault",
        context: Vault,
        step open_vault;
        step take_gold;
    }
}

#[tokio::test]
async fn async_errors_of_other_types_become_step_errors() {
    let mut vault = Vault::default();
    let error = vault_saga().run(&mut vault).await.unwrap_err();
    assert_eq!(vault.log, ["open", "close Some(3)"]);
    assert!(matches!(error, SagaError::Compensated { .. }), "{error}");
    let failed = &error.report().steps[1];
    assert_eq!(failed.status, StepStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("the alarm went off"));

    let mut vault = Vault {
        jammed: true,
        ..Vault::default()
    };
    let error = vault_saga().run(&mut vault).await.unwrap_err();
    assert_eq!(vault.log, ["open"]);
    assert!(error.is_stuck(), "{error}");
    let opened = &error.report().steps[0];
    assert_eq!(opened.status, StepStatus::CompensationFailed);
    assert_eq!(opened.last_error.as_deref(), Some("the door is jammed"));
}

/// `saga!` takes a `Task` written by hand next to `#[saga_task]`
/// functions: its consts say its name, pivot and undo, `saga!`'s options
/// merge with its own, and a `=> undo` from `saga!` attaches to it.
mod hand_written_tasks {
    use saga_core::{
        RetrySpec, StepError, StepInfo, Task, TaskFn, TaskFuture, UndoFn, saga, saga_task,
    };

    #[derive(Debug, Default)]
    pub struct Cart {
        pub log: Vec<String>,
        pub busy: u32,
    }

    pub struct Reserve;

    impl Task<Cart> for Reserve {
        type Output = u32;
        const NAME: &'static str = "reserve";
        const ACTION: TaskFn<Cart, (), u32> = TaskFn::Exclusive(|cart, _| {
            cart.log.push("reserve".to_owned());
            Ok(7)
        });
        const UNDO: Option<UndoFn<Cart, (), u32>> = Some(UndoFn::Exclusive(|cart, n, _| {
            cart.log.push(format!("release {n:?}"));
            Ok(())
        }));
    }

    /// Busy while the cart says so; retried by `saga!`'s `retry 3` over
    /// its own `retry_if`.
    pub struct Charge;

    impl Task<Cart> for Charge {
        type Output = ();
        const NAME: &'static str = "charge";
        const RETRY: RetrySpec = RetrySpec {
            retry_if: Some(|_| true),
            ..RetrySpec::NONE
        };
        const ACTION: TaskFn<Cart, (), ()> = TaskFn::ExclusiveAsync(|cart, info| {
            TaskFuture::new(async move {
                cart.log.push(format!("charge #{}", info.attempt()));
                if cart.busy > 0 {
                    cart.busy -= 1;
                    return Err(StepError::new("busy"));
                }
                Ok(())
            })
        });
    }

    #[saga_task]
    pub fn refund(cart: &mut Cart) -> Result<(), StepError> {
        cart.log.push("refund".to_owned());
        Ok(())
    }

    #[saga_task]
    pub fn ship(cart: &mut Cart, _: &StepInfo<'_>) -> Result<(), StepError> {
        cart.log.push("ship".to_owned());
        Err(StepError::new("no courier"))
    }

    #[tokio::test]
    async fn a_hand_written_task_is_a_step_of_saga() {
        let saga = saga! {
            name: "cart",
            context: Cart,
            step Reserve;
            step Charge => undo refund, retry 3;
            step ship;
        };
        let shape: Vec<_> = saga.shape().into_iter().map(|s| (s.name, s.kind)).collect();
        assert_eq!(
            shape,
            [
                ("reserve".to_owned(), saga_core::StepKind::Compensable),
                ("charge".to_owned(), saga_core::StepKind::Compensable),
                ("ship".to_owned(), saga_core::StepKind::NoUndo),
            ]
        );
        let mut cart = Cart {
            busy: 2,
            ..Cart::default()
        };
        let err = saga.run(&mut cart).await.unwrap_err();
        assert!(
            matches!(err, saga_core::SagaError::Compensated { .. }),
            "{err}"
        );
        assert_eq!(
            cart.log,
            [
                "reserve",
                "charge #1",
                "charge #2",
                "charge #3",
                "ship",
                "refund",
                "release Some(7)"
            ]
        );
    }

    /// A `#[saga_task]` function's twin is a `Task` the builder takes.
    #[test]
    fn a_generated_step_is_a_task_the_builder_takes() {
        let saga = saga_core::Saga::<Cart>::builder("built")
            .task(Reserve)
            .task(ship {})
            .build()
            .unwrap();
        let mut cart = Cart::default();
        let err = saga.run_blocking(&mut cart).unwrap_err();
        assert!(
            matches!(err, saga_core::SagaError::Compensated { .. }),
            "{err}"
        );
        assert_eq!(cart.log, ["reserve", "ship", "release Some(7)"]);
    }
}

// ------------------------------------------- generic dependencies ----

/// A tool of the generic saga below.
struct Payments {
    next: u64,
}

#[derive(Default)]
struct Checkout {
    payment: Option<u64>,
}

#[saga_task]
fn pay_generic(checkout: &mut Checkout, payments: &Payments) -> Result<u64, StepError> {
    checkout.payment = Some(payments.next);
    Ok(payments.next)
}

/// `saga!` checks with items, which cannot see a function's type
/// parameters, so its `dependencies:` is a concrete type
/// (`tests/ui/dependencies-generic.rs`); a saga generic over its
/// dependencies names the same `#[saga_task]` functions in the builder.
fn generic_checkout<D>() -> Saga<Checkout, D>
where
    D: saga_core::Provides<Payments> + Send + Sync + 'static,
{
    Saga::builder("checkout")
        .task(pay_generic {})
        .build()
        .expect("one step, no pivot")
}

#[test]
fn a_saga_generic_over_its_dependencies_takes_the_builder() {
    let payments = Payments { next: 7 };
    let mut checkout = Checkout::default();
    let report = generic_checkout::<Payments>()
        .using(&payments)
        .run_blocking(&mut checkout)
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(checkout.payment, Some(7));
}
