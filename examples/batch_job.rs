//! A nightly batch job with a synchronous `main`: one durable saga per
//! refund, on `refunds.db`. Kill it (Ctrl-C, kill -9) and run it again:
//! the rerun carries the unfinished refunds on, refunds nothing twice, and
//! says what it picked up.
//!
//! ```text
//! cargo run --example batch_job      # kill it mid-way, then run it again
//! ```
//!
//! The job needs no `async fn` of its own: a multi-thread runtime drives
//! the engine (a sync step holds a thread while it runs, and on a
//! current-thread runtime the only one: no lease would be renewed), the
//! steps are plain sync functions, and every wait is bounded, because a
//! wait on an execution no process can run (a definition this build does
//! not register, say) never ends by itself.

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use saga_core::store::SqliteStore;
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo, WaitError};
use serde::{Deserialize, Serialize};

/// One refund, as the saga carries it (and logs it, as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Refund {
    pub account: String,
    pub cents: i64,
    pub debited: bool,
    pub paid: bool,
}

/// Stands for a call that takes a while (a bank, a ledger).
fn call(what: &str, info: &StepInfo<'_>) {
    println!("  {what} (key {})", info.idempotency_key());
    std::thread::sleep(Duration::from_millis(200));
}

pub fn refund_saga() -> Result<Saga<Refund>, saga_core::BuildError> {
    Saga::builder("refund")
        .step(
            Step::new("debit", |r: &mut Refund, info: &StepInfo<'_>| {
                if r.cents <= 0 {
                    // No retry fixes bad data: permanent, rolled back at once.
                    let reason = format!("amount {} is not positive", r.cents);
                    return Err(StepError::new(reason).permanent());
                }
                call(&format!("debiting {} cents", r.cents), info);
                r.debited = true;
                Ok(())
            })
            .undo(|r: &mut Refund, _: Option<&()>, info: &StepInfo<'_>| {
                call("crediting the debit back", info);
                r.debited = false;
                Ok::<_, StepError>(())
            }),
        )
        .pivot(Step::new(
            "pay_out",
            |r: &mut Refund, info: &StepInfo<'_>| {
                call(&format!("paying {} to {}", r.cents, r.account), info);
                r.paid = true;
                Ok::<_, StepError>(())
            },
        ))
        .build()
}

/// What a run of the job did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Unfinished refunds an earlier, killed run left, carried on.
    pub picked_up: usize,
    pub refunded: usize,
    /// Refunds rolled back, each with its reason.
    pub rolled_back: Vec<(String, String)>,
    /// Refunds that need an operator (stuck, or not ended in time).
    pub need_attention: Vec<String>,
}

/// The job: every refund of `refunds` once, on the store at `path`.
pub fn run(path: &Path, refunds: &[Refund]) -> Result<Summary, Box<dyn Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(path)?);
        engine.register(refund_saga()?).await?;
        let mut summary = Summary::default();
        // What an earlier run left unfinished is carried on first; the
        // refunds are waited for below with the others.
        let recovery = engine.recover().await?;
        summary.picked_up = recovery.resumed.len();
        if !recovery.resumed.is_empty() {
            println!("carrying on {} unfinished refunds", recovery.resumed.len());
        }
        // Refused: a definition this build does not register, say.
        for (id, why) in &recovery.refused {
            println!("{id}: {why}");
            summary.need_attention.push(id.to_string());
        }
        for (n, refund) in refunds.iter().enumerate() {
            // The id names the refund: a rerun finds the execution it
            // started, and starts nothing twice.
            let id = engine
                .start_with_id("refund", format!("refund-{n}"), refund.clone())
                .await?;
            match tokio::time::timeout(Duration::from_secs(60), engine.wait(&id)).await {
                Ok(Ok(_)) => summary.refunded += 1,
                Ok(Err(WaitError::Saga(failed)))
                    if failed.report().status == ExecutionStatus::Compensated =>
                {
                    summary.rolled_back.push((id.to_string(), causes(&failed)));
                }
                Ok(Err(other)) => {
                    println!("{id}: {}", causes(&other));
                    summary.need_attention.push(id.to_string());
                }
                Err(_) => summary.need_attention.push(id.to_string()),
            }
        }
        Ok(summary)
    })
}

/// An error with its causes: a saga's error says where it failed; why is
/// in its source (the step's own error).
fn causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let refunds: Vec<Refund> = [("acct-1", 1500), ("acct-2", -200), ("acct-3", 990)]
        .into_iter()
        .map(|(account, cents)| Refund {
            account: account.to_owned(),
            cents,
            ..Refund::default()
        })
        .collect();
    let summary = run(Path::new("refunds.db"), &refunds)?;
    println!(
        "refunded {}, rolled back {}, carried on {}",
        summary.refunded,
        summary.rolled_back.len(),
        summary.picked_up
    );
    for (id, why) in &summary.rolled_back {
        println!("  {id}: {why}");
    }
    if !summary.need_attention.is_empty() {
        println!(
            "need an operator (`saga --store refunds.db show <id>`): {:?}",
            summary.need_attention
        );
        std::process::exit(1);
    }
    Ok(())
}
