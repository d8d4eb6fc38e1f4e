//! The payment service's client: a charge and a refund, each carrying the
//! step's idempotency key, so that a step run again after a crash (or a
//! refund retried) is applied by the payment service at most once.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// How long one call may take before the step gives up on it (its outcome
/// then unknown: a retry or the compensation sends the same key again).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a call to the payment service can end with, told apart by what
/// it says about the request: applied or not, and whether sending it
/// again can change the answer. [`crate::saga`] turns each into the
/// step's error (docs/DESIGN.md, "Classifying a remote call's errors").
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// No connection could be made (refused, no route, DNS): the request
    /// never left, so nothing was applied; another attempt may get through.
    #[error("the payment service could not be reached: {0}")]
    NotSent(String),
    /// Sent, and no answer came (a timeout, a connection lost or reset, an
    /// answer cut off or unreadable): the request may have been applied.
    #[error("the payment service did not answer: {0}")]
    NoAnswer(String),
    /// A `4xx` answer other than `408` and `429`: the service refused the
    /// request (a declined card, a refunded key), nothing was applied, and
    /// the same request gets the same answer.
    #[error("the payment service refused ({status}): {body}")]
    Refused {
        /// The answer's status.
        status: StatusCode,
        /// The answer's body, as text.
        body: String,
    },
    /// `408 Request Timeout` or `429 Too Many Requests`: not applied, and
    /// worth sending again later.
    #[error("the payment service asks to try again later ({status}): {body}")]
    Busy {
        /// The answer's status.
        status: StatusCode,
        /// The answer's body, as text.
        body: String,
    },
    /// A `5xx` answer: the service failed while it handled the request,
    /// maybe after it applied it (a charge made, then an error on the way
    /// out), so the request may have been applied.
    #[error("the payment service failed ({status}): {body}")]
    Failed {
        /// The answer's status.
        status: StatusCode,
        /// The answer's body, as text.
        body: String,
    },
}

/// A charge, as the payment service takes it.
#[derive(Debug, Serialize)]
struct ChargeRequest<'a> {
    key: &'a str,
    order: &'a str,
    amount: u64,
}

/// A refund of the charge made with `key`.
#[derive(Debug, Serialize)]
struct RefundRequest<'a> {
    key: &'a str,
}

/// The payment service's answer to a charge.
#[derive(Debug, Deserialize)]
struct ChargeAnswer {
    charge_id: String,
}

/// The payment service at `base_url` (`http://host:port`, no TLS: a real
/// provider would need hyper-rustls' connector here).
#[derive(Debug, Clone)]
pub struct PaymentsClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base_url: String,
}

impl PaymentsClient {
    /// A client of the service at `base_url`, with pooled connections.
    pub fn new(base_url: impl Into<String>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        PaymentsClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
            base_url,
        }
    }

    /// Charges `amount` for `order` under `key`; returns the charge's id.
    /// The same key charged twice returns the first charge's id.
    pub async fn charge(
        &self,
        key: &str,
        order: &str,
        amount: u64,
    ) -> Result<String, PaymentError> {
        let body = self
            .post("/charges", &ChargeRequest { key, order, amount })
            .await?;
        let answer: ChargeAnswer = serde_json::from_slice(&body)
            // A success status: the charge was made, whatever the body.
            .map_err(|e| PaymentError::NoAnswer(format!("unreadable answer: {e}")))?;
        Ok(answer.charge_id)
    }

    /// Refunds the charge made under `key` (nothing to refund is no
    /// error: the charge may never have reached the service); the key can
    /// charge nothing afterwards.
    pub async fn refund(&self, key: &str) -> Result<(), PaymentError> {
        self.post("/refunds", &RefundRequest { key })
            .await
            .map(drop)
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<Bytes, PaymentError> {
        // A request that cannot be built is never sent.
        let json = serde_json::to_vec(body)
            .map_err(|e| PaymentError::NotSent(format!("unencodable request: {e}")))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base_url))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| PaymentError::NotSent(e.to_string()))?;
        let call = async {
            let response = self.http.request(request).await.map_err(|e| {
                // Only a failed connect proves the request never left; any
                // other error may come after the service read it.
                if e.is_connect() {
                    PaymentError::NotSent(causes(&e))
                } else {
                    PaymentError::NoAnswer(causes(&e))
                }
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| PaymentError::NoAnswer(causes(&e)))?
                .to_bytes();
            if status.is_success() {
                return Ok(body);
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            Err(match status {
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                    PaymentError::Busy { status, body }
                }
                _ if status.is_client_error() => PaymentError::Refused { status, body },
                // A 5xx, or a status no provider should send (1xx, 3xx):
                // nothing says the request was not applied.
                _ => PaymentError::Failed { status, body },
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| PaymentError::NoAnswer(format!("no answer in {CALL_TIMEOUT:?}")))?
    }
}

/// An error and its causes, `: `-separated (hyper's own message is only
/// its kind, "client error (Connect)").
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
