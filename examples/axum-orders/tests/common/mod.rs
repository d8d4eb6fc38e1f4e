//! What the example's tests share: a fake payment service with a ledger
//! of every request, the service under test as a process, and HTTP
//! helpers. Each test file uses part of it.
#![allow(dead_code)]

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

/// Every wait of the tests is bounded by this, so a bug fails a test
/// rather than hanging CI.
pub const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The fake payment service

/// A request the payment service holds open: it applies it, says so on
/// `arrived`, and answers only once `release` fires (or is dropped).
pub struct Hold {
    kind: &'static str,
    /// The order's id: the request's key starts with `{order}/`.
    order: String,
    arrived: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// How the payment service misbehaves with one order's requests of one
/// kind, as real providers do.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Applies the request, then answers `500` instead of its result, the
    /// first `times` times (a provider failing on the way out).
    ApplyThen500 { times: u32 },
    /// Answers `402 Payment Required` and applies nothing (a declined card).
    Decline,
}

/// A fault and the requests it applies to.
struct FaultRule {
    kind: &'static str,
    order: String,
    fault: Fault,
}

/// The payment service's state: its ledger, the request to hold and the
/// faults to inject.
#[derive(Clone)]
pub struct Payments {
    ledger: Arc<Mutex<Connection>>,
    hold: Arc<Mutex<Option<Hold>>>,
    faults: Arc<Mutex<Vec<FaultRule>>>,
}

#[derive(Deserialize)]
pub struct Charge {
    key: String,
    order: String,
    amount: u64,
}

#[derive(Deserialize)]
pub struct Refund {
    key: String,
}

impl Payments {
    pub fn open(path: &Path) -> Self {
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
                 -- a key never charged), refused (a charge of a refunded
                 -- key) or declined (a fault: nothing applied).
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
            faults: Arc::default(),
        }
    }

    /// Makes every `kind` request for `order` (whatever its key) meet
    /// `fault`.
    pub fn fail(&self, kind: &'static str, order: &str, fault: Fault) {
        self.faults.lock().unwrap().push(FaultRule {
            kind,
            order: order.to_owned(),
            fault,
        });
    }

    /// The fault this request meets, if any (an `ApplyThen500` used up is
    /// none).
    fn fault(&self, kind: &str, key: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let rule = faults
            .iter_mut()
            .find(|r| r.kind == kind && key.starts_with(&format!("{}/", r.order)))?;
        match &mut rule.fault {
            Fault::ApplyThen500 { times: 0 } => None,
            Fault::ApplyThen500 { times } => {
                *times -= 1;
                Some(Fault::ApplyThen500 { times: *times + 1 })
            }
            Fault::Decline => Some(Fault::Decline),
        }
    }

    /// Records a request the service refused without applying it.
    fn refuse(&self, kind: &str, key: &str) {
        record(&self.ledger.lock().unwrap(), kind, key, "declined");
    }

    /// Holds the next `kind` request for `order` (whatever its key);
    /// returns the signal of its arrival and its release.
    pub fn hold(
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
    pub async fn maybe_hold(&self, kind: &str, key: &str) {
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
    pub fn apply_charge(&self, charge: &Charge) -> Result<String, String> {
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
    pub fn apply_refund(&self, refund: &Refund) {
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
    pub fn requests(&self) -> Vec<(i64, String, String, String)> {
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

pub fn record(ledger: &Connection, kind: &str, key: &str, result: &str) {
    ledger
        .execute(
            "INSERT INTO requests (kind, key, result) VALUES (?1, ?2, ?3)",
            params![kind, key, result],
        )
        .unwrap();
}

pub async fn charge(State(payments): State<Payments>, Json(charge): Json<Charge>) -> Response {
    let fault = payments.fault("charge", &charge.key);
    if let Some(Fault::Decline) = fault {
        payments.refuse("charge", &charge.key);
        return (StatusCode::PAYMENT_REQUIRED, "card declined").into_response();
    }
    let answer = payments.apply_charge(&charge);
    payments.maybe_hold("charge", &charge.key).await;
    if let Some(Fault::ApplyThen500 { .. }) = fault {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    }
    match answer {
        Ok(id) => Json(json!({ "charge_id": id })).into_response(),
        Err(refusal) => (StatusCode::CONFLICT, refusal).into_response(),
    }
}

pub async fn refund(State(payments): State<Payments>, Json(refund): Json<Refund>) -> Response {
    let fault = payments.fault("refund", &refund.key);
    if let Some(Fault::Decline) = fault {
        payments.refuse("refund", &refund.key);
        return (StatusCode::PAYMENT_REQUIRED, "refund declined").into_response();
    }
    payments.apply_refund(&refund);
    payments.maybe_hold("refund", &refund.key).await;
    if let Some(Fault::ApplyThen500 { .. }) = fault {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    }
    StatusCode::OK.into_response()
}

/// Serves `payments` on a free port of 127.0.0.1; returns its base URL.
pub async fn serve_payments(payments: Payments) -> String {
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
pub struct Service {
    pub child: Child,
    pub url: String,
    /// Its stdout, line by line.
    pub lines: mpsc::Receiver<String>,
}

impl Service {
    pub fn start(store: &Path, payment_url: &str) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_axum-orders"))
            .args(["--listen", "127.0.0.1:0", "--payment-url", payment_url])
            .arg("--store")
            .arg(store)
            // A killed process' executions are taken over at once (its
            // file lock is gone); the short ttl bounds the wait should
            // nothing prove it dead, and the poll finds them within 100 ms.
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
    pub fn line(&self, prefix: &str) -> String {
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
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("the killed service is reaped");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM could not be sent");
    }

    /// Waits (bounded) for the process to exit.
    pub fn exit(&mut self) -> ExitStatus {
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

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub async fn send(http: &HttpClient, request: Request<Full<Bytes>>) -> (StatusCode, Value) {
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

pub async fn post_order(http: &HttpClient, service: &Service, order: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/orders", service.url))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(order.to_string())))
        .unwrap();
    send(http, request).await
}

pub async fn get_order(http: &HttpClient, service: &Service, id: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .uri(format!("{}/orders/{id}", service.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(http, request).await
}

/// Posts `order` twice: both answers are `202` with the order's id.
pub async fn place(http: &HttpClient, service: &Service, order: Value) {
    let id = order["id"].clone();
    for _ in 0..2 {
        let (status, body) = post_order(http, service, order.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["id"], id);
    }
}

/// Waits (bounded) until `rx` fires: the held request reached the payment
/// service.
pub async fn arrival(rx: oneshot::Receiver<()>, what: &str) {
    tokio::time::timeout(BOUND, rx)
        .await
        .unwrap_or_else(|_| panic!("{what} never reached the payment service"))
        .unwrap();
}

/// What each test runs in: a temporary directory with the service's store
/// path, the payment service (serving, its ledger in the directory) and an
/// HTTP client.
pub struct World {
    pub dir: PathBuf,
    pub store: PathBuf,
    pub payments: Payments,
    pub payment_url: String,
    pub http: HttpClient,
}

impl World {
    pub async fn new() -> World {
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

pub fn temp_dir() -> PathBuf {
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

/// Polls (bounded) `GET /orders/{id}` until the order's run has ended;
/// returns its report.
pub async fn ended(http: &HttpClient, service: &Service, id: &str) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, report) = get_order(http, service, id).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let state = report["status"].as_str().unwrap_or_default();
        if state != "running" && state != "compensating" {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never ended; last report: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
