//! A call that arrives after its compensation, and the marker that refuses
//! it.
//!
//! ```text
//! cargo run --example late_call
//! ```
//!
//! A step's attempt can reach a remote service *after* the saga gave up on
//! it and compensated: an attempt that timed out while its request was
//! still on the wire, or a worker that stalled past its lease while another
//! worker took the execution over and rolled it back (fencing stops the
//! stalled worker's next log write, not a request it already sent). The
//! compensation then ran first and found nothing to undo; the late charge
//! lands afterwards and nobody refunds it.
//!
//! The cure is in the service, keyed by the step's idempotency key: the
//! compensation records a "nothing to undo, and refuse this key from now
//! on" marker under the key when it finds no charge, and the charge
//! endpoint refuses a key that carries the marker. Here the payment
//! service is an in-process ledger; the charge attempt times out while its
//! request is delayed in flight, the rollback voids the key, and the late
//! request is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::{Saga, Step, StepError, StepInfo};

/// What the payment service knows of one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The key charged this many cents.
    Charged(u64),
    /// The charge was refunded.
    Refunded(u64),
    /// The compensation came first and found nothing: any charge under this
    /// key from now on is refused.
    Voided,
}

/// The payment service's ledger, keyed by idempotency key. A real service
/// keeps it in its database, with the key under a unique constraint.
#[derive(Debug, Default, Clone)]
pub struct Ledger(Arc<Mutex<HashMap<String, Entry>>>);

impl Ledger {
    /// Charges `cents` under `key`, at most once; refused once voided.
    pub fn charge(&self, key: &str, cents: u64) -> Result<(), String> {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            None => {
                entries.insert(key.to_owned(), Entry::Charged(cents));
                Ok(())
            }
            // A repeated request: the first one's effect stands.
            Some(Entry::Charged(_)) => Ok(()),
            Some(Entry::Refunded(_) | Entry::Voided) => {
                Err(format!("charge `{key}` refused: it was already undone"))
            }
        }
    }

    /// Undoes the charge under `key`: refunds it, or, if none arrived yet,
    /// voids the key so that a late charge is refused.
    pub fn refund(&self, key: &str) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match entries.get(key) {
            Some(Entry::Charged(cents) | Entry::Refunded(cents)) => Entry::Refunded(*cents),
            None | Some(Entry::Voided) => Entry::Voided,
        };
        entries.insert(key.to_owned(), entry);
    }

    /// The entry under `key`.
    pub fn entry(&self, key: &str) -> Option<Entry> {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }
}

/// Where the charge's request is kept, to await its late answer.
pub type LateRequest = Arc<Mutex<Option<tokio::task::JoinHandle<Result<(), String>>>>>;

/// A one-step saga whose charge attempt times out after 50 ms while its
/// request reaches the ledger only after `delay`. The joined handle is the
/// late request's answer.
pub fn charge_saga(
    ledger: &Ledger,
    delay: Duration,
    late: LateRequest,
) -> Result<Saga<()>, saga_core::BuildError> {
    let on_charge = ledger.clone();
    let on_refund = ledger.clone();
    Saga::builder("payment")
        .step(
            Step::new_async("charge", move |_: &mut (), info: &StepInfo<'_>| {
                let ledger = on_charge.clone();
                let key = info.idempotency_key().to_string();
                let late = Arc::clone(&late);
                Box::pin(async move {
                    // The request leaves now and arrives after `delay`,
                    // whatever becomes of this attempt.
                    let request = tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        ledger.charge(&key, 4200)
                    });
                    *late.lock().unwrap_or_else(|e| e.into_inner()) = Some(request);
                    // The attempt waits longer than its timeout allows.
                    tokio::time::sleep(delay * 2).await;
                    Ok::<_, StepError>(())
                })
            })
            .timeout(Duration::from_millis(50))
            .undo_async(move |_: &mut (), _: Option<&()>, info: &StepInfo<'_>| {
                // `None`: the charge's outcome is unknown (it timed out).
                // Refund it if it arrived; void its key if not.
                on_refund.refund(&info.idempotency_key().to_string());
                Box::pin(async { Ok::<_, StepError>(()) })
            }),
        )
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ledger = Ledger::default();
    let late = Arc::new(Mutex::new(None));
    let saga = charge_saga(&ledger, Duration::from_millis(200), Arc::clone(&late))?;

    let error = saga.run(&mut ()).await.expect_err("the charge times out");
    let key = format!("{}/charge", error.report().execution_id);
    println!("saga: {error}");
    println!("ledger after the rollback: {:?}", ledger.entry(&key));

    let request = late.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(request) = request {
        match request.await? {
            Ok(()) => println!("the late charge went through: money taken, nothing will refund it"),
            Err(refused) => println!("the late charge arrived: {refused}"),
        }
    }
    println!("ledger at the end: {:?}", ledger.entry(&key));
    Ok(())
}
