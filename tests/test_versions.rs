//! A definition's declared version (`SagaBuilder::version`, `version:` in
//! `saga!`) is part of its fingerprint: during a rolling upgrade that
//! changes the context but not the steps, the old build leaves the new
//! build's executions alone, and the other way round.
//!
//! Before: the fingerprint saw only the steps, so an outside workload's
//! old build (context `{qty}`) took over executions the new build
//! (context `{qty, coupon}`) started, ran them with its code and wrote
//! their contexts back without `coupon`; and registering the same steps
//! over both context types succeeded, the second replacing the first.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_core::{
    BuildError, EngineError, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo, saga,
    saga_task,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use support::durable::in_dying_runtime;
use support::steps::unless_hung;
use support::stores::every_store;

/// The context of the old build.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderV1 {
    qty: u32,
}

/// The context of the new build: a field more.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderV2 {
    qty: u32,
    #[serde(default)]
    coupon: String,
}

/// `reserve`, then `ship`, which waits at `gate` (if any) after telling
/// `entered`.
fn order_saga<C: Send + Sync + 'static>(
    version: Option<&str>,
    gate: Option<(Arc<Notify>, Arc<Semaphore>)>,
    reserve: fn(&mut C),
) -> Saga<C> {
    let mut builder = Saga::<C>::builder("order");
    if let Some(version) = version {
        builder = builder.version(version);
    }
    builder
        .step(Step::new("reserve", move |c: &mut C, _: &StepInfo<'_>| {
            reserve(c);
            Ok::<(), StepError>(())
        }))
        .step(Step::new_async(
            "ship",
            move |_: &mut C, _: &StepInfo<'_>| {
                let gate = gate.clone();
                Box::pin(async move {
                    if let Some((entered, open)) = gate {
                        entered.notify_one();
                        let _ = open.acquire().await.map(|p| p.forget());
                    }
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

fn v1(version: Option<&str>) -> Saga<OrderV1> {
    order_saga(version, None, |o: &mut OrderV1| o.qty += 1)
}

fn v2(gate: Option<(Arc<Notify>, Arc<Semaphore>)>) -> Saga<OrderV2> {
    order_saga(Some("2"), gate, |o: &mut OrderV2| o.qty += 1)
}

#[test]
fn a_version_is_part_of_the_fingerprint_and_none_keeps_it() {
    let none = v1(None).fingerprint();
    let two = v1(Some("2")).fingerprint();
    let three = v1(Some("3")).fingerprint();
    assert_ne!(none, two);
    assert_ne!(two, three);
    assert_eq!(two, v2(None).fingerprint(), "the context is not part of it");
    assert_eq!(v1(Some("2")).version(), Some("2"));
    assert_eq!(v1(None).version(), None);
}

#[test]
fn an_empty_version_is_refused() {
    for blank in ["", "  "] {
        let error = Saga::<u32>::builder("order")
            .version(blank)
            .step(Step::new("reserve", |_: &mut u32, _: &StepInfo<'_>| {
                Ok::<(), StepError>(())
            }))
            .build()
            .unwrap_err();
        assert_eq!(
            error,
            BuildError::EmptyVersion {
                saga: "order".into()
            }
        );
        assert!(error.to_string().contains("empty version"), "{error}");
    }
}

#[saga_task]
fn reserve(order: &mut OrderV1) -> Result<(), StepError> {
    order.qty += 1;
    Ok(())
}

#[saga_task]
async fn ship(_order: &mut OrderV1) -> Result<(), StepError> {
    Ok(())
}

#[test]
fn saga_macro_declares_the_same_version_as_the_builder() {
    let by_macro = saga! {
        name: "order",
        version: "2",
        context: OrderV1,
        step reserve;
        step ship;
    };
    assert_eq!(by_macro.version(), Some("2"));
    assert_eq!(by_macro.fingerprint(), v1(Some("2")).fingerprint());
    let unversioned = saga! {
        name: "order",
        context: OrderV1,
        step reserve;
        step ship;
    };
    assert_eq!(unversioned.fingerprint(), v1(None).fingerprint());
}

#[tokio::test]
async fn the_same_steps_over_two_contexts_need_two_versions() {
    let engine = SagaEngine::new(saga_core::store::MemoryStore::new());
    engine.register(v1(Some("2"))).await.unwrap();
    let error = engine.register(v2(None)).await.unwrap_err();
    assert!(
        matches!(&error, EngineError::DuplicateFingerprint { saga, registered, given, .. }
            if saga == "order" && registered.ends_with("OrderV1") && given.ends_with("OrderV2")),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("SagaBuilder::version"), "{message}");
    // The first registration stands: its executions still start.
    let id = engine.start("order", OrderV1 { qty: 0 }).await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    // The same definition again, over the same context, is no clash.
    engine.register(v1(Some("2"))).await.unwrap();
    // Two versions register side by side; `start` runs the last one.
    let one = engine.register(v1(Some("1"))).await.unwrap();
    let id = engine.start("order", OrderV1 { qty: 0 }).await.unwrap();
    let record = engine.store().get(&id).await.unwrap().unwrap();
    assert_eq!(record.fingerprint, one);
    let stored = engine.store().definition(&one).await.unwrap().unwrap();
    assert_eq!(stored.version().unwrap().as_deref(), Some("1"));
    let unversioned = engine.register(v1(None)).await.unwrap();
    let stored = engine.store().definition(&unversioned).await.unwrap();
    assert_eq!(stored.unwrap().version().unwrap(), None);
}

/// Two registrations at once, one fingerprint over two contexts: one of
/// them is refused. Before: both checked before either was in the
/// registry, and the last to finish replaced the other.
#[tokio::test]
async fn two_registrations_at_once_of_one_fingerprint_clash_too() {
    use saga_core::testkit::DelayedStore;
    let store = DelayedStore::new(
        saga_core::store::MemoryStore::new(),
        Duration::from_millis(50),
    );
    let engine = SagaEngine::new(store);
    let (a, b) = tokio::join!(engine.register(v1(Some("2"))), engine.register(v2(None)));
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(EngineError::DuplicateFingerprint { .. })))
        .count();
    assert_eq!(refused, 1, "{a:?} {b:?}");
}

/// The new build (version "2", context with `coupon`) on `store`: it
/// starts an execution with a coupon and dies mid-step, its lease
/// expiring after 100 ms. Returns its fingerprint and the execution.
fn new_build_dies_mid_step(
    setup: &tokio::runtime::Runtime,
    store: &Arc<dyn saga_core::store::SagaStore>,
) -> (String, saga_core::ExecutionId) {
    let (entered, open) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let new_build =
        SagaEngine::with_store(Arc::clone(store)).with_lease_ttl(Duration::from_millis(100));
    let newer = setup
        .block_on(new_build.register(v2(Some((Arc::clone(&entered), open)))))
        .unwrap();
    let id = in_dying_runtime(|| async {
        let order = OrderV2 {
            qty: 0,
            coupon: "WELCOME".into(),
        };
        let id = new_build.start("order", order).await.unwrap();
        unless_hung(entered.notified()).await;
        id
    });
    (newer, id)
}

/// Rolling back while the new version's executions are in flight: a
/// build registering the new version first and the old one last starts
/// new executions on the old, and carries the new one's on.
#[test]
fn a_rollback_build_starts_the_old_version_and_finishes_the_new() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let store: Arc<dyn saga_core::store::SagaStore> =
        Arc::new(saga_core::store::MemoryStore::new());
    let (newer, in_flight) = new_build_dies_mid_step(&setup, &store);
    let again = tokio::runtime::Runtime::new().unwrap();
    again.block_on(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rollback = SagaEngine::with_store(Arc::clone(&store));
        assert_eq!(rollback.register(v2(None)).await.unwrap(), newer);
        let older = rollback.register(v1(None)).await.unwrap();
        let id = rollback.start("order", OrderV1 { qty: 0 }).await.unwrap();
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            record.fingerprint, older,
            "new executions start on the older"
        );
        let report = unless_hung(rollback.wait(&id)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed);

        let recovery = rollback.recover().await.unwrap();
        assert_eq!(recovery.resumed, vec![in_flight.clone()]);
        let report = unless_hung(rollback.wait(&in_flight)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed);
        let order: OrderV2 = rollback.context(&in_flight).await.unwrap();
        assert_eq!(order.coupon, "WELCOME");
    });
}

/// The new build (version "2", context with `coupon`) starts an execution
/// and dies mid-step; the old build (no version, context without
/// `coupon`) does not take it over; a new build does, and the coupon is
/// still there at the end.
#[test]
fn an_old_build_leaves_a_new_versions_executions_alone() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    for (store_name, store) in setup.block_on(every_store("versions_rolling")) {
        let (_, id) = new_build_dies_mid_step(&setup, &store);
        let again = tokio::runtime::Runtime::new().unwrap();
        again.block_on(async {
            // The new build's lease expires: anyone may take it over.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let old_build = SagaEngine::with_store(Arc::clone(&store));
            old_build.register(v1(None)).await.unwrap();
            let recovery = old_build.recover().await.unwrap();
            assert!(recovery.resumed.is_empty(), "{store_name}: {recovery:?}");
            let record = store.get(&id).await.unwrap().unwrap();
            assert_eq!(record.status, ExecutionStatus::Running, "{store_name}");

            let next_build = SagaEngine::with_store(Arc::clone(&store));
            next_build.register(v2(None)).await.unwrap();
            let recovery = next_build.recover().await.unwrap();
            assert_eq!(recovery.resumed, vec![id.clone()], "{store_name}");
            let report = unless_hung(next_build.wait(&id)).await.unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
            let order: OrderV2 = next_build.context(&id).await.unwrap();
            assert_eq!(order.coupon, "WELCOME", "{store_name}");
            assert_eq!(order.qty, 1, "{store_name}: `reserve` ran once");
        });
    }
}

/// A rollback build that registers the versions in the wrong order: a
/// start with the older context names the version that takes it and
/// says `start` runs the last registered. Before: only "takes a context
/// of type `OrderV2`, not `OrderV1`", though the build registered both.
#[tokio::test]
async fn a_start_on_a_version_registered_before_the_last_says_so() {
    let engine = SagaEngine::new(saga_core::store::MemoryStore::new());
    let older = engine.register(v1(Some("1"))).await.unwrap();
    engine.register(v2(None)).await.unwrap();
    let error = engine.start("order", OrderV1 { qty: 0 }).await.unwrap_err();
    let EngineError::ContextType { other, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        other.as_deref(),
        Some(format!("{older} (version 1)").as_str())
    );
    let message = error.to_string();
    assert!(
        message.contains("`start` runs the version registered last"),
        "{message}"
    );
    // A context no registered version takes: no such hint.
    let error = engine.start("order", 7_u32).await.unwrap_err();
    assert!(
        matches!(error, EngineError::ContextType { other: None, .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("registered last"), "{error}");
}
