//! The service survives `kill -9`: SIGKILLed once inside a step (a charge)
//! and once inside a compensation (a refund), restarted on the same store,
//! it carries every order to `completed` or `compensated`, and the payment
//! service applies each idempotency key at most once.
//!
//! Real parts: the service is its own process (`axum-orders`), killed with
//! SIGKILL (`Child::kill`); its store and the payment ledger are SQLite
//! files in a temporary directory; the payment service is an axum server in
//! this test process. It holds one request open (it has applied it, but not
//! answered) until the test has killed the service, so the restarted
//! service must send the same key again, and the ledger must absorb it.

mod common;

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::json;

use common::{Service, World, arrival, ended, get_order, place, post_order};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_sigkill_inside_a_step_and_inside_a_compensation() {
    let World {
        dir,
        store,
        payments,
        payment_url,
        http,
    } = World::new().await;

    // 1. Killed inside a step: order-x's charge is applied, its answer
    //    held, and the service killed before it hears it.
    let (arrived, release_x) = payments.hold("charge", "order-x");
    let service = Service::start(&store, &payment_url);
    place(&http, &service, json!({ "id": "order-a", "amount": 1000 })).await;
    place(
        &http,
        &service,
        json!({ "id": "order-b", "amount": 2000, "fail_after_charge": true }),
    )
    .await;
    place(&http, &service, json!({ "id": "order-x", "amount": 3000 })).await;
    arrival(arrived, "order-x's charge").await;
    service.kill();
    let _ = release_x.send(());

    // 2. Killed inside a compensation: order-y fails after its charge, and
    //    the service is killed while its refund is held. (order-x is
    //    taken over by this run, at once: the killed process' file lock is
    //    gone, which proves it dead, whatever its lease says.)
    let (arrived, release_y) = payments.hold("refund", "order-y");
    let service = Service::start(&store, &payment_url);
    place(
        &http,
        &service,
        json!({ "id": "order-y", "amount": 4000, "fail_after_charge": true }),
    )
    .await;
    arrival(arrived, "order-y's refund").await;
    service.kill();
    let _ = release_y.send(());

    // 3. Restarted once more, it carries every order to its end.
    let service = Service::start(&store, &payment_url);
    // A POST after the restarts still names the same execution.
    place(&http, &service, json!({ "id": "order-x", "amount": 3000 })).await;
    let expected = [
        ("order-a", "completed"),
        ("order-b", "compensated"),
        ("order-x", "completed"),
        ("order-y", "compensated"),
    ];
    let mut reports = HashMap::new();
    for (id, _) in expected {
        reports.insert(id, ended(&http, &service, id).await);
    }
    for (id, status) in expected {
        assert_eq!(reports[id]["status"], status, "{id}: {}", reports[id]);
    }
    let (status, body) = get_order(&http, &service, "order-unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = post_order(&http, &service, json!({ "id": "a/b", "amount": 1 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"],
        "an order id must be non-empty and without `/`, not \"a/b\""
    );

    // The ledger: the steps' keys and no others (a charge under another
    // key would be a second payment for its order)...
    let requests = payments.requests();
    eprintln!("ledger: {requests:#?}");
    let mut keys: Vec<&str> = requests.iter().map(|(_, _, key, _)| key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys,
        [
            "order-a/charge",
            "order-b/charge",
            "order-x/charge",
            "order-y/charge"
        ],
        "{requests:?}"
    );
    // ...each applied at most once...
    for (id, _) in expected {
        let key = format!("{id}/charge");
        let applied = |kind: &str| {
            requests
                .iter()
                .filter(|(_, k, key_, result)| k == kind && *key_ == key && result == "applied")
                .count()
        };
        assert_eq!(applied("charge"), 1, "{key} charged once: {requests:?}");
        let refunds = applied("refund");
        // ...refunded exactly when its order was compensated...
        let compensated = reports[id]["status"] == "compensated";
        assert_eq!(refunds, usize::from(compensated), "{key}: {requests:?}");
        // ...and never charged after its refund (not even refused).
        let refund_seq = requests
            .iter()
            .find(|(_, k, key_, _)| k == "refund" && *key_ == key)
            .map(|(seq, ..)| *seq);
        if let Some(refund_seq) = refund_seq {
            assert!(
                !requests
                    .iter()
                    .any(|(seq, k, key_, _)| k == "charge" && *key_ == key && *seq > refund_seq),
                "{key} was charged after its refund: {requests:?}"
            );
        }
    }
    // The requests held across a kill were sent again by the restarted
    // service, and absorbed by their keys.
    let absorbed = |kind: &str, key: &str| {
        requests
            .iter()
            .any(|(_, k, key_, result)| k == kind && key_ == key && result == "absorbed")
    };
    assert!(absorbed("charge", "order-x/charge"), "{requests:?}");
    assert!(absorbed("refund", "order-y/charge"), "{requests:?}");

    // SIGTERM: the service stops gracefully, with success.
    let mut service = service;
    service.terminate();
    let status = service.exit();
    assert!(status.success(), "the service exited with {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while a step waits for the payment service: the service stops
/// taking requests, lets the run finish, then exits; the next start finds
/// the order completed, and its charge was sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_runs_in_flight_finish() {
    let World {
        dir,
        store,
        payments,
        payment_url,
        http,
    } = World::new().await;

    let (arrived, release) = payments.hold("charge", "order-z");
    let mut service = Service::start(&store, &payment_url);
    place(&http, &service, json!({ "id": "order-z", "amount": 500 })).await;
    arrival(arrived, "order-z's charge").await;
    service.terminate();
    // Released only once the service is shutting down.
    assert_eq!(
        service.line("stopping:"),
        "stopping: waiting up to 10s for 1 runs"
    );
    let _ = release.send(());
    assert!(
        service
            .line("stopped:")
            .starts_with("stopped: 1 runs finished, 0 left"),
        "the run in flight was cut off"
    );
    let status = service.exit();
    assert!(status.success(), "the service exited with {status}");

    let service = Service::start(&store, &payment_url);
    let (status, report) = get_order(&http, &service, "order-z").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "completed", "{report}");
    // Charged once, and never sent again: the run was not carried on by
    // the second start.
    let requests = payments.requests();
    assert_eq!(
        requests,
        [(
            1,
            "charge".into(),
            "order-z/charge".into(),
            "applied".into()
        )],
        "{requests:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
