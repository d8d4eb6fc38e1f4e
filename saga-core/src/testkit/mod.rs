//! A test kit for your own sagas (feature `testkit`): runs a saga with a
//! failure injected at every step and every compensation, each in turn
//! ([`failures`](SagaTest::failures)), with every step run twice, every
//! compensation run twice, and each step (and compensation) that retries
//! taking effect with its answer lost and then run again by a retry
//! ([`twice`](SagaTest::twice)), and durably
//! with a crash at every log commit of three paths, each crash followed by
//! recovery ([`crashes`](SagaTest::crashes): the undisturbed run, the run
//! in which every step that retries fails once, and the longest rollback;
//! not every failure path), and checks each run against the failure rules
//! of `docs/DESIGN.md` section 3.
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
//! Effects kept in the saga's dependencies (a fake payment service's
//! ledger) are compared the same way when each case gets dependencies of
//! its own: [`SagaTest::with_fresh_dependencies`] and
//! [`SagaTest::with_dependencies_state`].
//!
//! Steps that sleep (real remote calls, or stand-ins for them) make every
//! case wait: run the kit under `#[tokio::test(start_paused = true)]`
//! (tokio's `test-util` feature) and tokio's timers cost nothing. Only
//! with [`Durability::Memory`] and steps that wait on tokio's timers
//! alone: paused time jumps to the next timer whenever the runtime has
//! nothing to do, and it has nothing to do while a thread works for it
//! (the SQLite store's writer with [`Durability::Sqlite`], a
//! `spawn_blocking` database call in a step), so timers fire early (a
//! step's timeout among them) and a `tokio::time::timeout` around the kit
//! measures hours that did not pass. Bound such a test on real time.
//!
//! A case reports a panicking step or compensation (the run catches it),
//! but Rust's panic hook still prints it, with a backtrace when
//! `RUST_BACKTRACE` is set: expect that output beside the report.
//!
//! Turn the feature on for your tests: saga-core is not on crates.io yet,
//! so give the same path (or `git =`) as your `[dependencies]` entry:
//!
//! ```toml
//! [dev-dependencies]
//! saga-core = { path = "../saga-framework/saga-core", features = ["testkit"] }
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

pub mod contract;
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

/// Compares what two runs left (their final contexts, or their
/// dependencies): `None` when they agree, a description of the difference
/// otherwise.
type Compare<T> = dyn Fn(&T, &T) -> Option<String> + Send + Sync;

/// A comparison of what `state` extracts: "`b` instead of `a`", as
/// [`difference`] words it.
fn compare_by<T, S, F>(state: F) -> Arc<Compare<T>>
where
    S: PartialEq + fmt::Debug,
    F: Fn(&T) -> S + Send + Sync + 'static,
{
    Arc::new(move |a: &T, b: &T| {
        let (a, b) = (state(a), state(b));
        (a != b).then(|| difference(&format!("{a:#?}"), &format!("{b:#?}")))
    })
}

/// How `b` differs from `a`, both `{:#?}` text: "`b` instead of `a`" of
/// a value on one line; of a larger one, only the lines that differ
/// (those between the lines both begin and end with), each trimmed, so
/// that a struct's changed field shows rather than two whole dumps.
fn difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    if a.len() <= 1 && b.len() <= 1 {
        return format!("{} instead of {}", b.join(""), a.join(""));
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let middle = |lines: &[&str]| {
        lines[prefix..lines.len() - suffix]
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match (middle(&a), middle(&b)) {
        (a, b) if a.is_empty() => format!("{b} added"),
        (a, b) if b.is_empty() => format!("{a} missing"),
        (a, b) => format!("{b} instead of {a}"),
    }
}

/// Tests one saga against failures, repeated steps and crashes. See the
/// [module documentation](self) for what each case checks.
///
/// A saga with dependencies (`Saga<C, D>`) gets them from
/// [`with_fresh_dependencies`](Self::with_fresh_dependencies) (a new value
/// per case, which the kit can then check) or
/// [`with_dependencies`](Self::with_dependencies) (one value every case
/// shares). Within a crash case, the engine that recovers uses the same
/// value as the one that crashed, as the remote services a real process
/// reaches survive its crash.
pub struct SagaTest<C, D = ()> {
    saga: Saga<C, D>,
    deps: Option<Dependencies<D>>,
    factory: Arc<dyn Fn() -> C + Send + Sync>,
    compare: Option<Arc<Compare<C>>>,
    compare_deps: Option<Arc<Compare<D>>>,
}

/// Where each case gets its dependencies.
enum Dependencies<D> {
    /// One value, shared by every case.
    Shared(Arc<D>),
    /// A new value per case, from the user's factory.
    Fresh(Arc<dyn Fn() -> D + Send + Sync>),
}

impl<D> Clone for Dependencies<D> {
    fn clone(&self) -> Self {
        match self {
            Dependencies::Shared(deps) => Dependencies::Shared(Arc::clone(deps)),
            Dependencies::Fresh(make) => Dependencies::Fresh(Arc::clone(make)),
        }
    }
}

impl<D> Dependencies<D> {
    /// The dependencies of one case.
    fn make(&self) -> Arc<D> {
        match self {
            Dependencies::Shared(deps) => Arc::clone(deps),
            Dependencies::Fresh(make) => Arc::new(make()),
        }
    }
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
            compare_deps: None,
        }
    }

    /// Gives the saga its dependencies: every case, in memory and durable,
    /// and every engine that recovers after a simulated crash, uses this
    /// one value. Without it (or
    /// [`with_fresh_dependencies`](Self::with_fresh_dependencies)), a saga
    /// whose dependencies are not `()` fails every mode with one case
    /// saying so.
    ///
    /// Shared by every case, the value gathers every case's effects, so
    /// the kit cannot tell one case's from another's: when the
    /// dependencies hold effects (a fake payment service's ledger), give
    /// [`with_fresh_dependencies`](Self::with_fresh_dependencies) and
    /// [`with_dependencies_state`](Self::with_dependencies_state) instead.
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
        self.deps = Some(Dependencies::Shared(Arc::new(deps)));
        self
    }

    /// Gives each case dependencies of its own, made by `factory` (a new
    /// set of fakes: an in-memory payment service, a recording mailer).
    /// Within a crash case, the engine that crashed and the one that
    /// recovers share the case's value, as a real process's remote
    /// services outlive its crash. With
    /// [`with_dependencies_state`](Self::with_dependencies_state), the kit
    /// then checks what each case left in them.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use saga_core::testkit::{Durability, SagaTest};
    /// use saga_core::{Saga, Step, StepError, StepInfo};
    ///
    /// /// A fake payment service: the charges it holds, by key.
    /// #[derive(Default)]
    /// struct Payments { ledger: Mutex<Vec<String>> }
    ///
    /// let saga = Saga::<(), Payments>::builder("pay")
    ///     .step(Step::new("charge", |_: &mut (), info: &StepInfo<'_, Payments>| {
    ///         let mut ledger = info.dependencies().ledger.lock().unwrap();
    ///         let key = info.idempotency_key();
    ///         if !ledger.contains(&key) { // the key makes a repeat harmless
    ///             ledger.push(key);
    ///         }
    ///         Ok::<_, StepError>(())
    ///     })
    ///     // Without it, the case where `charge`'s outcome is unknown (it
    ///     // charged, the saga cannot know) fails: a charge left after the
    ///     // rollback.
    ///     .undo(|_: &mut (), _: Option<&()>, info: &StepInfo<'_, Payments>| {
    ///         let key = info.idempotency_key();
    ///         info.dependencies().ledger.lock().unwrap().retain(|k| *k != key);
    ///         Ok::<_, StepError>(())
    ///     }))
    ///     .build()
    ///     .unwrap();
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let kit = SagaTest::new(&saga, || ())
    ///     .with_fresh_dependencies(Payments::default)
    ///     // Each case has its own execution id, so its own keys: compare
    ///     // what does not depend on them.
    ///     .with_dependencies_state(|p: &Payments| p.ledger.lock().unwrap().len());
    /// kit.check_all(Durability::Memory).await.assert_passed();
    /// # });
    /// ```
    #[must_use]
    pub fn with_fresh_dependencies(
        mut self,
        factory: impl Fn() -> D + Send + Sync + 'static,
    ) -> Self {
        self.deps = Some(Dependencies::Fresh(Arc::new(factory)));
        self
    }

    /// Where the cases get their dependencies: as given, or `()` for a
    /// saga without any; else the problem to report.
    fn dependencies(&self) -> Result<Dependencies<D>, TestReport> {
        let problem = |message: String| {
            self.report(vec![report::failed_case(
                "dependencies".to_owned(),
                crate::report::ExecutionStatus::Completed,
                message,
            )])
        };
        match &self.deps {
            Some(Dependencies::Shared(_)) if self.compare_deps.is_some() => Err(problem(
                "`with_dependencies_state` compares each case's dependencies with those of another case or a fresh set: give the dependencies with `SagaTest::with_fresh_dependencies`, not `with_dependencies` (one value every case shares)".to_owned(),
            )),
            Some(deps) => Ok(deps.clone()),
            None => {
                let unit: Arc<dyn std::any::Any + Send + Sync> = Arc::new(());
                unit.downcast::<D>().map(Dependencies::Shared).map_err(|_| {
                    problem(format!(
                        "the saga needs dependencies of type `{}`: give them with `SagaTest::with_dependencies` (one value for every case) or `SagaTest::with_fresh_dependencies` (a new value per case)",
                        std::any::type_name::<D>()
                    ))
                })
            }
        }
    }

    /// Compares what `state` extracts from the final context of the
    /// "twice" and crash cases with what it extracts after an undisturbed
    /// run of the same case (a step that is not idempotent shows as a
    /// difference), and, after a rollback, with what it extracts from a
    /// fresh context (an effect left behind shows). Extract what your
    /// steps change and their compensations undo (stock, charges, a fake
    /// service's ledger kept in the context), not test scaffolding.
    /// Effects kept in the dependencies are checked by
    /// [`with_dependencies_state`](Self::with_dependencies_state).
    #[must_use]
    pub fn with_state<S, F>(mut self, state: F) -> Self
    where
        S: PartialEq + fmt::Debug,
        F: Fn(&C) -> S + Send + Sync + 'static,
    {
        self.compare = Some(compare_by(state));
        self
    }

    /// Does for the dependencies what [`with_state`](Self::with_state)
    /// does for the context: compares what `state` extracts from each
    /// case's dependencies at its end with what it extracts from those of
    /// an undisturbed run of the same case ("twice" and crash modes: a
    /// step or compensation that ignores its idempotency key shows as a
    /// difference), and, after a rollback, from a fresh set (an effect
    /// left behind shows). Needs
    /// [`with_fresh_dependencies`](Self::with_fresh_dependencies): with
    /// one shared value, every mode fails with one case saying so.
    ///
    /// Each case runs under its own execution id, so its own idempotency
    /// keys: extract what does not depend on them (how many charges, the
    /// amounts, the most times one key was charged), not the keys.
    #[must_use]
    pub fn with_dependencies_state<S, F>(mut self, state: F) -> Self
    where
        S: PartialEq + fmt::Debug,
        F: Fn(&D) -> S + Send + Sync + 'static,
    {
        self.compare_deps = Some(compare_by(state));
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

#[cfg(test)]
mod tests {
    use super::difference;

    #[test]
    fn a_one_line_value_differs_whole() {
        assert_eq!(difference("1", "2"), "2 instead of 1");
        assert_eq!(difference("\"a\"", "\"b\""), "\"b\" instead of \"a\"");
    }

    #[test]
    fn a_struct_differs_by_its_changed_lines_only() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Ledger {
            stock: u32,
            charged: i64,
            emails: u32,
        }
        let a = format!(
            "{:#?}",
            Ledger {
                stock: 10,
                charged: 1999,
                emails: 1
            }
        );
        let b = format!(
            "{:#?}",
            Ledger {
                stock: 10,
                charged: 3998,
                emails: 1
            }
        );
        assert_eq!(
            difference(&a, &b),
            "charged: 3998, instead of charged: 1999,"
        );
        let b = format!(
            "{:#?}",
            Ledger {
                stock: 8,
                charged: 1999,
                emails: 2
            }
        );
        assert_eq!(
            difference(&a, &b),
            "stock: 8, charged: 1999, emails: 2, instead of stock: 10, charged: 1999, emails: 1,"
        );
    }

    #[test]
    fn lines_added_or_missing_are_named_so() {
        let a = format!("{:#?}", vec![1, 2]);
        let b = format!("{:#?}", vec![1, 2, 3]);
        assert_eq!(difference(&a, &b), "3, added");
        assert_eq!(difference(&b, &a), "3, missing");
    }
}
