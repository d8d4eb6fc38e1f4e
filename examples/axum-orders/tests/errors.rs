//! The payment service's errors reach the saga as what they say about the
//! charge: a `500` may come after the charge was made, so an order whose
//! charge got one is refunded when it rolls back; a `4xx` (a declined
//! card) applied nothing and is not sent again; a payment service that
//! cannot be reached was sent nothing, so nothing is refunded.
//!
//! Real parts: the service is its own process (`axum-orders`) on an SQLite
//! store; the payment service is an axum server in this test process with
//! a ledger of every request (`common`), told to misbehave per order.

mod common;

use serde_json::{Value, json};

use common::{Fault, Service, World, ended, place};

/// The ledger's `(kind, key, result)` of every request for `order`.
fn requests_of(world: &World, order: &str) -> Vec<(String, String, String)> {
    world
        .payments
        .requests()
        .into_iter()
        .filter(|(_, _, key, _)| key.starts_with(&format!("{order}/")))
        .map(|(_, kind, key, result)| (kind, key, result))
        .collect()
}

fn request(kind: &str, key: &str, result: &str) -> (String, String, String) {
    (kind.into(), key.into(), result.into())
}

/// The report's entry for `step`.
fn step<'a>(report: &'a Value, step: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == step))
        .unwrap_or_else(|| panic!("no step `{step}` in {report}"))
}

/// Before: a `500` was a refusal (permanent, "nothing was applied"), so
/// the order ended compensated with the customer charged and no refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_answered_500_after_it_was_made_is_refunded() {
    let world = World::new().await;
    world
        .payments
        .fail("charge", "order-p", Fault::ApplyThen500 { times: u32::MAX });
    let service = Service::start(&world.store, &world.payment_url);
    place(
        &world.http,
        &service,
        json!({ "id": "order-p", "amount": 700 }),
    )
    .await;
    let report = ended(&world.http, &service, "order-p").await;

    assert_eq!(report["status"], "compensated", "{report}");
    // Retried with the same key (the ledger absorbing it), then refunded.
    assert_eq!(step(&report, "charge")["attempts"], 3, "{report}");
    assert_eq!(step(&report, "charge")["status"], "compensated", "{report}");
    assert_eq!(
        requests_of(&world, "order-p"),
        [
            request("charge", "order-p/charge", "applied"),
            request("charge", "order-p/charge", "absorbed"),
            request("charge", "order-p/charge", "absorbed"),
            request("refund", "order-p/charge", "applied"),
        ]
    );
    let _ = std::fs::remove_dir_all(&world.dir);
}

/// Before: a refund's `500` was permanent, and the order ended stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_answered_500_is_sent_again() {
    let world = World::new().await;
    world
        .payments
        .fail("refund", "order-q", Fault::ApplyThen500 { times: 1 });
    let service = Service::start(&world.store, &world.payment_url);
    let order = json!({ "id": "order-q", "amount": 800, "fail_after_charge": true });
    place(&world.http, &service, order).await;
    let report = ended(&world.http, &service, "order-q").await;

    assert_eq!(report["status"], "compensated", "{report}");
    assert_eq!(
        requests_of(&world, "order-q"),
        [
            request("charge", "order-q/charge", "applied"),
            request("refund", "order-q/charge", "applied"),
            request("refund", "order-q/charge", "absorbed"),
        ]
    );
    let _ = std::fs::remove_dir_all(&world.dir);
}

/// A `4xx` says nothing was applied, and sending it again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_charge_is_neither_sent_again_nor_refunded() {
    let world = World::new().await;
    world.payments.fail("charge", "order-d", Fault::Decline);
    let service = Service::start(&world.store, &world.payment_url);
    place(
        &world.http,
        &service,
        json!({ "id": "order-d", "amount": 900 }),
    )
    .await;
    let report = ended(&world.http, &service, "order-d").await;

    assert_eq!(report["status"], "compensated", "{report}");
    assert_eq!(step(&report, "charge")["attempts"], 1, "{report}");
    assert_eq!(step(&report, "charge")["status"], "failed", "{report}");
    assert_eq!(
        requests_of(&world, "order-d"),
        [request("charge", "order-d/charge", "declined")]
    );
    let _ = std::fs::remove_dir_all(&world.dir);
}

/// A connection refused sent nothing: the charge is tried again and, with
/// no payment service at all, fails without a refund to send (before: no
/// answer, outcome unknown, and every refund unanswered too: stuck).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_service_that_cannot_be_reached_charged_nothing() {
    let world = World::new().await;
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let service = Service::start(&world.store, &url);
    place(
        &world.http,
        &service,
        json!({ "id": "order-n", "amount": 100 }),
    )
    .await;
    let report = ended(&world.http, &service, "order-n").await;

    assert_eq!(report["status"], "compensated", "{report}");
    assert_eq!(step(&report, "charge")["attempts"], 3, "{report}");
    assert_eq!(step(&report, "charge")["status"], "failed", "{report}");
    assert_eq!(step(&report, "reserve_stock")["status"], "compensated");
    let _ = std::fs::remove_dir_all(&world.dir);
}
