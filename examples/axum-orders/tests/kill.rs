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

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Every wait of this test is bounded by this, so a bug fails it rather
/// than hanging CI.
const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The fake payment service

/// A request the payment service holds open: it applies it, says so on
/// `arrived`, and answers only once `release` fires (or is dropped).
struct Hold {
    kind: &'static str,
    /// The order's id: the request's key starts with `{order}/`.
    order: String,
    arrived: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The payment service's state: its ledger and the request to hold.
#[derive(Clone)]
struct Payments {
    ledger: Arc<Mutex<Connection>>,
    hold: Arc<Mutex<Option<Hold>>>,
}

#[derive(Deserialize)]
struct Charge {
    key: String,
    order: String,
    amount: u64,
}

#[derive(Deserialize)]
struct Refund {
    key: String,
}

impl Payments {
    fn open(path: &Path) -> Self {
        let ledger = Connection::open(path).expect("the ledger opens");
        ledger
            .execute_batch(
                "CREATE TABLE keys (
                     key TEXT PRIMARY KEY,
                     charge_id TEXT,
                     refunded INTEGER NOT NULL
                 );
                 -- Every request, in arrival order, with what it did:
                 -- applied, absorbed (a repeated key), voided (a refund of
                 -- a key never charged) or refused.
                 CREATE TABLE requests (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     kind TEXT NOT NULL,
                     key TEXT NOT NULL,
                     result TEXT NOT NULL
                 );",
            )
            .expect("the ledger's tables are created");
        Payments {
            ledger: Arc::new(Mutex::new(ledger)),
            hold: Arc::default(),
        }
    }

    /// Holds the next `kind` request for `order` (whatever its key);
    /// returns the signal of its arrival and its release.
    fn hold(
        &self,
        kind: &'static str,
        order: &str,
    ) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (arrived_tx, arrived_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.hold.lock().unwrap() = Some(Hold {
            kind,
            order: order.to_owned(),
            arrived: arrived_tx,
            release: release_rx,
        });
        (arrived_rx, release_tx)
    }

    /// Waits for the release if this request is the one held.
    async fn maybe_hold(&self, kind: &str, key: &str) {
        let held = {
            let mut hold = self.hold.lock().unwrap();
            match hold.as_ref() {
                Some(h) if h.kind == kind && key.starts_with(&format!("{}/", h.order)) => {
                    hold.take()
                }
                _ => None,
            }
        };
        if let Some(held) = held {
            let _ = held.arrived.send(());
            let _ = held.release.await;
        }
    }

    /// Applies a charge at most once per key: a repeated key gets the
    /// first answer, a refunded (voided) key is refused.
    fn apply_charge(&self, charge: &Charge) -> Result<String, String> {
        let ledger = self.ledger.lock().unwrap();
        let existing: Option<(Option<String>, bool)> = ledger
            .query_row(
                "SELECT charge_id, refunded FROM keys WHERE key = ?1",
                params![charge.key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .unwrap();
        let (result, answer) = match existing {
            Some((_, true)) => ("refused", Err(format!("key {} was refunded", charge.key))),
            Some((Some(id), false)) => ("absorbed", Ok(id)),
            Some((None, false)) => unreachable!("a key row is a charge or a refund"),
            None => {
                let id = format!("ch-{}-{}", charge.order, charge.amount);
                ledger
                    .execute(
                        "INSERT INTO keys (key, charge_id, refunded) VALUES (?1, ?2, 0)",
                        params![charge.key, id],
                    )
                    .unwrap();
                ("applied", Ok(id))
            }
        };
        record(&ledger, "charge", &charge.key, result);
        answer
    }

    /// Applies a refund at most once per key, voiding the key.
    fn apply_refund(&self, refund: &Refund) {
        let ledger = self.ledger.lock().unwrap();
        let refunded: Option<bool> = ledger
            .query_row(
                "SELECT refunded FROM keys WHERE key = ?1",
                params![refund.key],
                |row| row.get(0),
            )
            .optional()
            .unwrap();
        let result = match refunded {
            Some(true) => "absorbed",
            Some(false) => {
                ledger
                    .execute(
                        "UPDATE keys SET refunded = 1 WHERE key = ?1",
                        params![refund.key],
                    )
                    .unwrap();
                "applied"
            }
            None => {
                ledger
                    .execute(
                        "INSERT INTO keys (key, charge_id, refunded) VALUES (?1, NULL, 1)",
                        params![refund.key],
                    )
                    .unwrap();
                "voided"
            }
        };
        record(&ledger, "refund", &refund.key, result);
    }

    /// Every request so far: (seq, kind, key, result).
    fn requests(&self) -> Vec<(i64, String, String, String)> {
        let ledger = self.ledger.lock().unwrap();
        let mut statement = ledger
            .prepare("SELECT seq, kind, key, result FROM requests ORDER BY seq")
            .unwrap();
        statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

fn record(ledger: &Connection, kind: &str, key: &str, result: &str) {
    ledger
        .execute(
            "INSERT INTO requests (kind, key, result) VALUES (?1, ?2, ?3)",
            params![kind, key, result],
        )
        .unwrap();
}

async fn charge(State(payments): State<Payments>, Json(charge): Json<Charge>) -> Response {
    let answer = payments.apply_charge(&charge);
    payments.maybe_hold("charge", &charge.key).await;
    match answer {
        Ok(id) => Json(json!({ "charge_id": id })).into_response(),
        Err(refusal) => (StatusCode::CONFLICT, refusal).into_response(),
    }
}

async fn refund(State(payments): State<Payments>, Json(refund): Json<Refund>) -> Response {
    payments.apply_refund(&refund);
    payments.maybe_hold("refund", &refund.key).await;
    StatusCode::OK.into_response()
}

/// Serves `payments` on a free port of 127.0.0.1; returns its base URL.
async fn serve_payments(payments: Payments) -> String {
    let app = Router::new()
        .route("/charges", post(charge))
        .route("/refunds", post(refund))
        .with_state(payments);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

// ---------------------------------------------------------------------------
// The service under test, as a process

/// A running `axum-orders`; killed when dropped, so a failing test leaves
/// no process behind.
struct Service {
    child: Child,
    url: String,
    /// Its stdout, line by line.
    lines: mpsc::Receiver<String>,
}

impl Service {
    fn start(store: &Path, payment_url: &str) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_axum-orders"))
            .args(["--listen", "127.0.0.1:0", "--payment-url", payment_url])
            .arg("--store")
            .arg(store)
            // A killed process' executions are taken over a second after
            // its last lease renewal, found by a poll every 100 ms.
            .args(["--lease-ttl-ms", "1000", "--poll-ms", "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the service starts");
        // Read stdout on a thread for the process' whole life, so its
        // last lines never meet a closed pipe.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[axum-orders] {line}");
                let _ = lines_tx.send(line);
            }
        });
        let line = lines_rx
            .recv_timeout(BOUND)
            .expect("the service says where it listens");
        let address = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line `{line}`"));
        Service {
            url: format!("http://{address}"),
            child,
            lines: lines_rx,
        }
    }

    /// Waits (bounded) for the next line of stdout that starts with
    /// `prefix`; returns it.
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line `{prefix}...` from the service: {e}"),
            }
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps it.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("the killed service is reaped");
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM could not be sent");
    }

    /// Waits (bounded) for the process to exit.
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("the service can be waited on") {
                return status;
            }
            assert!(Instant::now() < deadline, "the service ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// HTTP from the test

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn send(http: &HttpClient, request: Request<Full<Bytes>>) -> (StatusCode, Value) {
    let call = async {
        let response = http.request(request).await.expect("the service answers");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("a JSON answer ({e}): {}", String::from_utf8_lossy(&body)));
        (status, json)
    };
    tokio::time::timeout(BOUND, call)
        .await
        .expect("the service answers in time")
}

async fn post_order(http: &HttpClient, service: &Service, order: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/orders", service.url))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(order.to_string())))
        .unwrap();
    send(http, request).await
}

async fn get_order(http: &HttpClient, service: &Service, id: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .uri(format!("{}/orders/{id}", service.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(http, request).await
}

/// Posts `order` twice: both answers are `202` with the order's id.
async fn place(http: &HttpClient, service: &Service, order: Value) {
    let id = order["id"].clone();
    for _ in 0..2 {
        let (status, body) = post_order(http, service, order.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["id"], id);
    }
}

/// Waits (bounded) until `rx` fires: the held request reached the payment
/// service.
async fn arrival(rx: oneshot::Receiver<()>, what: &str) {
    tokio::time::timeout(BOUND, rx)
        .await
        .unwrap_or_else(|_| panic!("{what} never reached the payment service"))
        .unwrap();
}

/// What each test runs in: a temporary directory with the service's store
/// path, the payment service (serving, its ledger in the directory) and an
/// HTTP client.
struct World {
    dir: PathBuf,
    store: PathBuf,
    payments: Payments,
    payment_url: String,
    http: HttpClient,
}

impl World {
    async fn new() -> World {
        let dir = temp_dir();
        let payments = Payments::open(&dir.join("ledger.db"));
        World {
            store: dir.join("orders.db"),
            payment_url: serve_payments(payments.clone()).await,
            payments,
            http: Client::builder(TokioExecutor::new()).build_http(),
            dir,
        }
    }
}

fn temp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "axum-orders-kill-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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
    //    the service is killed while its refund is held. (order-x waits
    //    for the killed process' lease to expire: this run or the next
    //    takes it over.)
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
    let deadline = Instant::now() + BOUND;
    for (id, _) in expected {
        loop {
            let (status, report) = get_order(&http, &service, id).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            let state = report["status"].as_str().unwrap_or_default().to_owned();
            if state != "running" && state != "compensating" {
                reports.insert(id, report);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never ended; last report: {report}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
