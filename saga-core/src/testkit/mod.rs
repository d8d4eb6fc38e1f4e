//! A test kit for your own sagas (feature `testkit`): runs a saga with a
//! failure injected at every step and every compensation, each in turn,
//! with every step run twice and then every compensation run twice, and
//! with a crash at every log point followed by recovery, and checks each
//! run against the failure rules of `docs/DESIGN.md` section 3.
//!
//! The kit wraps the definition's steps (the saga itself is untouched, and
//! the wrapped copy has the same [fingerprint](crate::Saga::fingerprint)),
//! so it runs the real actions and compensations on a fresh context from
//! your factory for every case. An injected failure either skips the action
//! (a clean failure: nothing took effect) or runs it and then reports an
//! error marked [`outcome_unknown`](crate::StepError::outcome_unknown) (it
//! took effect, the saga cannot know), so compensations are exercised with
//! `None` as well as with an output. Injected failures are persistent: every
//! attempt fails, so retry policies run out (on a [`TestClock`](crate::clock::TestClock): backoff
//! does not sleep).
//!
//! Every case checks that the run ended as the rules say (completed,
//! compensated or stuck), that no compensation ran for a step whose action
//! never started, that a step whose action took effect (or may have) was
//! compensated on a rollback and a step that failed cleanly was not, that
//! no compensation ran again after it succeeded, and that compensations ran
//! in reverse order. [`SagaTest::with_state`] adds a comparison of the
//! final context with the one an undisturbed run leaves (for the "twice"
//! and crash modes: how idempotency shows) and, after a rollback, with the
//! context the run started from (how an effect left behind shows).
//!
//! Steps that sleep (real remote calls, or stand-ins for them) make every
//! case wait: run the kit under `#[tokio::test(start_paused = true)]`
//! (tokio's `test-util` feature) and tokio's timers cost nothing.
//!
//! Add it as a dev-dependency with the feature on:
//!
//! ```toml
//! [dev-dependencies]
//! saga-core = { version = "0.1", features = ["testkit"] }
//! ```
//!
//! and copy this test:
//!
//! ```
//! use saga_core::testkit::{Durability, SagaTest};
//! use saga_core::{Saga, Step, StepError, StepInfo};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Order { reserved: u32, charged: u32 }
//!
//! fn order_saga() -> Saga<Order> {
//!     Saga::builder("order")
//!         .step(Step::new("reserve", |o: &mut Order, _: &StepInfo<'_>| {
//!             o.reserved = 2;
//!             Ok::<_, StepError>(())
//!         })
//!         .undo(|o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
//!             o.reserved = 0; // setting, not subtracting: safe to repeat
//!             Ok::<_, StepError>(())
//!         }))
//!         .pivot(Step::new("charge", |o: &mut Order, _: &StepInfo<'_>| {
//!             o.charged = 10;
//!             Ok::<_, StepError>(())
//!         }))
//!         .build()
//!         .expect("a valid saga")
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // In your tests: #[tokio::test] async fn order_saga_survives_failures() { .. }
//! let kit = SagaTest::new(&order_saga(), Order::default)
//!     .with_state(|o: &Order| (o.reserved, o.charged));
//! let report = kit.failures().await;
//! assert!(report.passed(), "{report}");
//! let report = kit.twice().await;
//! assert!(report.passed(), "{report}");
//! let report = kit.crashes(Durability::Memory).await;
//! assert!(report.passed(), "{report}");
//! // Or all three at once, printing every case on failure:
//! kit.check_all(Durability::Memory).await.assert_passed();
//! # });
//! ```

mod crash;
mod delayed_store;
mod failures;
mod inject;
mod oracle;
mod report;

pub use delayed_store::{DelayedStore, StoreCall, StoreOp};
pub use report::{CaseReport, TestReport};

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::saga::Saga;

/// Compares the final contexts of two runs: `None` when they agree, a
/// description of the difference otherwise.
type Compare<C> = dyn Fn(&C, &C) -> Option<String> + Send + Sync;

/// Tests one saga against failures, repeated steps and crashes. See the
/// [module documentation](self) for what each case checks.
///
/// A saga with dependencies (`Saga<C, D>`) gets them once, from
/// [`with_dependencies`](Self::with_dependencies): every case borrows the
/// same value, and so does the engine that recovers after each simulated
/// crash.
pub struct SagaTest<C, D = ()> {
    saga: Saga<C, D>,
    deps: Option<Arc<D>>,
    factory: Arc<dyn Fn() -> C + Send + Sync>,
    compare: Option<Arc<Compare<C>>>,
}

/// Where [`SagaTest::crashes`] keeps the log that survives the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// A [`MemoryStore`](crate::store::MemoryStore) shared by the crashed engine and the one that
    /// recovers.
    Memory,
    /// A temporary [`SqliteStore`](crate::store::SqliteStore) file per case
    /// (feature `sqlite`), in a directory of the run's own under the
    /// system's temporary directory; each case's files (the store, its
    /// journal, the owners' lock files beside it) are deleted when the
    /// case ends, and the directory when the run does.
    #[cfg(feature = "sqlite")]
    Sqlite,
}

impl<C: Send + 'static, D: Send + Sync + 'static> SagaTest<C, D> {
    /// A test of `saga`; `factory` makes the context of each case (the one
    /// your saga starts from in production). A saga with dependencies
    /// needs [`with_dependencies`](Self::with_dependencies) too.
    pub fn new(saga: &Saga<C, D>, factory: impl Fn() -> C + Send + Sync + 'static) -> Self {
        SagaTest {
            saga: saga.clone(),
            deps: None,
            factory: Arc::new(factory),
            compare: None,
        }
    }

    /// Gives the saga its dependencies: every case, in memory and durable,
    /// and every engine that recovers after a simulated crash, uses this
    /// one value. Without it, a saga whose dependencies are not `()` fails
    /// every mode with one case saying so.
    ///
    /// ```
    /// use saga_core::testkit::SagaTest;
    /// use saga_core::{Saga, Step, StepError, StepInfo};
    ///
    /// struct Rates { vat: u32 }
    ///
    /// let saga = Saga::<u32, Rates>::builder("price")
    ///     .step(Step::new("tax", |p: &mut u32, info: &StepInfo<'_, Rates>| {
    ///         *p += info.dependencies().vat;
    ///         Ok::<_, StepError>(())
    ///     }))
    ///     .build()
    ///     .unwrap();
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let kit = SagaTest::new(&saga, || 100).with_dependencies(Rates { vat: 20 });
    /// kit.failures().await.assert_passed();
    /// # });
    /// ```
    #[must_use]
    pub fn with_dependencies(mut self, deps: D) -> Self {
        self.deps = Some(Arc::new(deps));
        self
    }

    /// The dependencies every case uses: those given, or `()` for a saga
    /// without any; else the problem to report.
    fn dependencies(&self) -> Result<Arc<D>, TestReport> {
        if let Some(deps) = &self.deps {
            return Ok(Arc::clone(deps));
        }
        let unit: Arc<dyn std::any::Any + Send + Sync> = Arc::new(());
        unit.downcast::<D>().map_err(|_| {
            self.report(vec![report::failed_case(
                "dependencies".to_owned(),
                crate::report::ExecutionStatus::Completed,
                format!(
                    "the saga needs dependencies of type `{}`: give them with `SagaTest::with_dependencies`",
                    std::any::type_name::<D>()
                ),
            )])
        })
    }

    /// Compares what `state` extracts from the final context of the
    /// "twice" and crash cases with what it extracts after an undisturbed
    /// run of the same case (a step that is not idempotent shows as a
    /// difference), and, after a rollback, with what it extracts from a
    /// fresh context (an effect left behind shows). Extract what your
    /// steps change and their compensations undo (stock, charges, a fake
    /// service's ledger kept in the context), not test scaffolding.
    #[must_use]
    pub fn with_state<S, F>(mut self, state: F) -> Self
    where
        S: PartialEq + fmt::Debug,
        F: Fn(&C) -> S + Send + Sync + 'static,
    {
        self.compare = Some(Arc::new(move |a: &C, b: &C| {
            let (a, b) = (state(a), state(b));
            (a != b).then(|| format!("{b:?} instead of {a:?}"))
        }));
        self
    }

    fn report(&self, cases: Vec<CaseReport>) -> TestReport {
        TestReport {
            saga: self.saga.name().to_owned(),
            cases,
        }
    }
}

impl<C, D> SagaTest<C, D>
where
    C: Serialize + DeserializeOwned + Send + 'static,
    D: Send + Sync + 'static,
{
    /// Runs [`failures`](Self::failures), [`twice`](Self::twice) and
    /// [`crashes`](Self::crashes) and joins their reports.
    pub async fn check_all(&self, durability: Durability) -> TestReport {
        let failures = self.failures().await;
        let twice = self.twice().await;
        let crashes = self.crashes(durability).await;
        failures.merge(twice).merge(crashes)
    }
}
