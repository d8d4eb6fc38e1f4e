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

/// What a call to the payment service can end with.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// No answer: the request may or may not have been applied.
    #[error("the payment service did not answer: {0}")]
    Unreachable(String),
    /// The service answered with an error status: nothing was applied.
    #[error("the payment service refused ({status}): {body}")]
    Refused {
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
            .map_err(|e| PaymentError::Unreachable(format!("unreadable answer: {e}")))?;
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
        let json = serde_json::to_vec(body)
            .map_err(|e| PaymentError::Unreachable(format!("unencodable request: {e}")))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base_url))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| PaymentError::Unreachable(e.to_string()))?;
        let call = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| PaymentError::Unreachable(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| PaymentError::Unreachable(e.to_string()))?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                Err(PaymentError::Refused {
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| PaymentError::Unreachable(format!("no answer in {CALL_TIMEOUT:?}")))?
    }
}
