//! A saga's dependencies (`Saga<C, D>`): what its steps use and its log
//! must not hold. Builder closures reach them through
//! `StepInfo::dependencies`, in memory (`saga.using(&deps)`) and durably
//! (`SagaEngine::with_dependencies`); an engine without them refuses the
//! saga, so its worker never claims it; a recovery after a crash runs on
//! the recovering engine's dependencies; the test kit hands every case the
//! same value.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::store::{MemoryStore, SagaStore};
use saga_core::testkit::{Durability, SagaTest};
use saga_core::{
    EngineError, ExecutionStatus, Saga, SagaEngine, SagaError, Step, StepError, StepInfo, Worker,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The tools of the test's sagas: a name for the process they belong to,
/// a ledger of the calls made through them, and (for the crash test) a
/// point where a step hangs.
struct Services {
    process: &'static str,
    calls: Arc<Mutex<Vec<String>>>,
    hang: Option<Arc<Notify>>,
}

impl Services {
    fn new(process: &'static str) -> Self {
        Services {
            process,
            calls: Arc::default(),
            hang: None,
        }
    }

    fn call(&self, what: &str) {
        let mut calls = self.calls.lock().unwrap();
        calls.push(format!("{}:{what}", self.process));
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    reserved: bool,
    charged: bool,
}

/// `reserve` (sync, undone), `charge` (async, hangs where the services
/// say), and `ship`, which fails when `fail` is set.
fn checkout(fail: bool) -> Saga<Order, Services> {
    Saga::builder("checkout")
        .step(
            Step::new(
                "reserve",
                |order: &mut Order, info: &StepInfo<'_, Services>| {
                    info.dependencies().call("reserve");
                    order.reserved = true;
                    Ok::<_, StepError>(())
                },
            )
            .undo(
                |order: &mut Order, _: Option<&()>, info: &StepInfo<'_, Services>| {
                    info.dependencies().call("release");
                    order.reserved = false;
                    Ok::<_, StepError>(())
                },
            ),
        )
        .step(Step::new_async(
            "charge",
            |order: &mut Order, info: &StepInfo<'_, Services>| {
                Box::pin(async move {
                    let services = info.dependencies();
                    services.call("charge");
                    if let Some(hang) = &services.hang {
                        hang.notify_one();
                        std::future::pending::<()>().await;
                    }
                    order.charged = true;
                    Ok::<_, StepError>(())
                })
            },
        ))
        .step(Step::new(
            "ship",
            move |_: &mut Order, info: &StepInfo<'_, Services>| {
                info.dependencies().call("ship");
                if fail {
                    return Err(StepError::new("no courier"));
                }
                Ok(())
            },
        ))
        .build()
        .unwrap()
}

#[test]
fn a_builder_closure_reaches_the_dependencies_in_a_blocking_run() {
    let services = Services::new("here");
    let mut order = Order::default();
    let err = checkout(true)
        .using(&services)
        .run_blocking(&mut order)
        .unwrap_err();
    assert!(matches!(err, SagaError::Compensated { .. }), "{err}");
    assert_eq!(
        services.calls(),
        ["here:reserve", "here:charge", "here:ship", "here:release"]
    );
    assert_eq!(
        order,
        Order {
            reserved: false,
            charged: true
        }
    );
}

#[tokio::test]
async fn a_builder_closure_reaches_the_dependencies_in_an_async_run() {
    let services = Services::new("here");
    let mut order = Order::default();
    let report = checkout(false)
        .using(&services)
        .run(&mut order)
        .await
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(
        services.calls(),
        ["here:reserve", "here:charge", "here:ship"]
    );
}

#[tokio::test]
async fn a_durable_run_gets_the_engines_dependencies() {
    let services = Services::new("engine");
    let calls = Arc::clone(&services.calls);
    let engine = SagaEngine::new(MemoryStore::new()).with_dependencies(services);
    engine.register(checkout(false)).await.unwrap();
    let id = engine.start("checkout", Order::default()).await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(
        *calls.lock().unwrap(),
        ["engine:reserve", "engine:charge", "engine:ship"]
    );
}

#[tokio::test]
async fn register_refuses_a_saga_whose_dependencies_the_engine_lacks() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    let err = engine.register(checkout(false)).await.unwrap_err();
    assert!(
        matches!(err, EngineError::MissingDependencies { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "saga `checkout` needs dependencies of type `test_dependencies::Services`, which this engine was not given (it was given none); build the engine with `.with_dependencies(..)` of that type (`.with_shared_dependencies(arc)` for an `Arc` of it) before registering the saga"
    );
    // Nothing was registered: the saga cannot be started here, and its
    // definition was not recorded.
    let start = engine
        .start("checkout", Order::default())
        .await
        .unwrap_err();
    assert!(
        matches!(start, EngineError::UnknownSaga { .. }),
        "{start:?}"
    );
    let fingerprint = checkout(false).fingerprint();
    assert!(store.definition(&fingerprint).await.unwrap().is_none());
    // Dependencies of another type do not stand in for them, an `Arc` of
    // them neither; the error names what the engine was given.
    let other = SagaEngine::with_store(Arc::clone(&store))
        .with_dependencies(String::from("pool"))
        .with_dependencies(Arc::new(Services::new("arc")));
    let err = other.register(checkout(false)).await.unwrap_err();
    assert!(
        matches!(err, EngineError::MissingDependencies { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(
            "(it was given `alloc::string::String`, `alloc::sync::Arc<test_dependencies::Services>`)"
        ),
        "{err}"
    );
}

/// A service's `Arc<AppState>`, given as it is: the engine's runs use the
/// very value the caller holds.
#[tokio::test]
async fn dependencies_shared_already_are_used_as_they_are() {
    let shared = Arc::new(Services::new("shared"));
    let engine = SagaEngine::new(MemoryStore::new()).with_shared_dependencies(Arc::clone(&shared));
    engine.register(checkout(false)).await.unwrap();
    let id = engine.start("checkout", Order::default()).await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(
        *shared.calls.lock().unwrap(),
        ["shared:reserve", "shared:charge", "shared:ship"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_dependencies_never_claims_the_saga() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let submitter =
        SagaEngine::with_store(Arc::clone(&store)).with_dependencies(Services::new("submitter"));
    submitter.register(checkout(false)).await.unwrap();
    let plain = || {
        Saga::<Order>::builder("plain")
            .step(Step::new("only", |o: &mut Order, _: &StepInfo<'_>| {
                o.reserved = true;
                Ok::<_, StepError>(())
            }))
            .build()
            .unwrap()
    };
    submitter.register(plain()).await.unwrap();
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine.register(plain()).await.unwrap();
    assert!(engine.register(checkout(false)).await.is_err());
    let worker = Worker::new(engine)
        .with_poll_interval(Duration::from_millis(20))
        .spawn()
        .unwrap();
    let needs = submitter
        .submit("checkout", Order::default())
        .await
        .unwrap();
    let plain_id = submitter.submit("plain", Order::default()).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), submitter.wait(&plain_id))
        .await
        .expect("the worker did not run `plain`")
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.claimed, stats.finished), (1, 1));
    let record = store.get(&needs).await.unwrap().unwrap();
    assert_eq!(record.status, ExecutionStatus::Running);
    assert_eq!(record.owner, None, "`checkout` was left alone");
    assert!(store.events(&needs).await.unwrap().is_empty());
}

#[test]
fn a_recovery_runs_on_the_recovering_engines_dependencies() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let hang = Arc::new(Notify::new());
    let first = Services {
        hang: Some(Arc::clone(&hang)),
        ..Services::new("first")
    };
    let first_calls = Arc::clone(&first.calls);
    // The first process hangs in `charge` and dies there, its lease held.
    let id = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let id = rt.block_on(async {
            let engine = SagaEngine::with_store(Arc::clone(&store))
                .with_lease_ttl(Duration::from_millis(100))
                .with_dependencies(first);
            engine.register(checkout(false)).await.unwrap();
            let id = engine.start("checkout", Order::default()).await.unwrap();
            hang.notified().await;
            id
        });
        rt.shutdown_timeout(Duration::from_millis(100));
        id
    };
    assert_eq!(
        *first_calls.lock().unwrap(),
        ["first:reserve", "first:charge"]
    );
    let second = Services::new("second");
    let second_calls = Arc::clone(&second.calls);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let engine = SagaEngine::with_store(Arc::clone(&store)).with_dependencies(second);
        engine.register(checkout(false)).await.unwrap();
        loop {
            let recovery = engine.recover().await.unwrap();
            assert!(recovery.refused.is_empty(), "{:?}", recovery.refused);
            if recovery.resumed.contains(&id) {
                break;
            }
            // The first owner's lease has not expired yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        engine.wait(&id).await.unwrap()
    });
    assert_eq!(report.status, ExecutionStatus::Completed);
    // `charge` was cut off, so it runs again, on the second process's
    // services; `reserve` had ended and does not.
    assert_eq!(
        *second_calls.lock().unwrap(),
        ["second:charge", "second:ship"]
    );
    assert_eq!(
        *first_calls.lock().unwrap(),
        ["first:reserve", "first:charge"]
    );
}

/// Dependencies (an `Arc<Noted>`) that note the address they are
/// borrowed at: the `Arc` itself, so a clone handed to a case would show.
#[derive(Default)]
struct Noted {
    seen: Mutex<BTreeSet<usize>>,
    calls: AtomicUsize,
}

fn note(deps: &Arc<Noted>) {
    deps.seen
        .lock()
        .unwrap()
        .insert(std::ptr::from_ref(deps) as usize);
    deps.calls.fetch_add(1, Ordering::SeqCst);
}

fn noting() -> Saga<Order, Arc<Noted>> {
    Saga::builder("noting")
        .step(
            Step::new(
                "reserve",
                |o: &mut Order, info: &StepInfo<'_, Arc<Noted>>| {
                    note(info.dependencies());
                    o.reserved = true;
                    Ok::<_, StepError>(())
                },
            )
            .undo(
                |o: &mut Order, _: Option<&()>, info: &StepInfo<'_, Arc<Noted>>| {
                    note(info.dependencies());
                    o.reserved = false;
                    Ok::<_, StepError>(())
                },
            ),
        )
        .pivot(Step::new(
            "charge",
            |o: &mut Order, info: &StepInfo<'_, Arc<Noted>>| {
                note(info.dependencies());
                o.charged = true;
                Ok::<_, StepError>(())
            },
        ))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_test_kit_hands_every_case_and_every_engine_the_same_dependencies() {
    let noted = Arc::new(Noted::default());
    let kit = SagaTest::new(&noting(), Order::default)
        .with_dependencies(Arc::clone(&noted))
        .with_state(|o: &Order| (o.reserved, o.charged));
    kit.check_all(Durability::Memory).await.assert_passed();
    // Every case ran steps (in memory, on the crashed engines and on the
    // recovering ones), all on the one value given.
    assert!(noted.calls.load(Ordering::SeqCst) > 10);
    assert_eq!(noted.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_test_kit_says_when_the_dependencies_are_missing() {
    let kit = SagaTest::new(&noting(), Order::default);
    for report in [
        kit.failures().await,
        kit.twice().await,
        kit.crashes(Durability::Memory).await,
    ] {
        assert!(!report.passed());
        let text = report.to_string();
        assert!(
            text.contains("the saga needs dependencies of type `alloc::sync::Arc<test_dependencies::Noted>`: give them with `SagaTest::with_dependencies`"),
            "{text}"
        );
    }
}
