//! A failure that recovery does not run again keeps what its event logged:
//! the message, the cause chain and the marks. The log here holds a step's
//! failure logged as final and nothing after it (the owner stopped before
//! it logged the rollback): recovery must follow that decision with the
//! logged error, not a bare message.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_core::store::{Created, Event, EventKind, NewExecution};
use saga_core::{
    ExecutionStatus, LoggedError, Saga, SagaEngine, SagaError, Step, StepError, StepInfo,
    StepStatus, WaitError,
};
use support::stores::every_store;

/// `reserve` (with an undo), then `charge`.
fn saga() -> Saga<()> {
    Saga::builder("checkout")
        .step(
            Step::new("reserve", |_: &mut (), _: &StepInfo<'_>| {
                Ok::<(), StepError>(())
            })
            .undo(|_: &mut (), _: Option<&()>, _: &StepInfo<'_>| Ok::<(), StepError>(())),
        )
        .step(Step::new("charge", |_: &mut (), _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

fn event(seq: u64, kind: EventKind, step: u32) -> Event {
    let mut event = Event::new(seq, kind);
    event.step = Some(step);
    event.attempt = 1;
    event
}

#[tokio::test]
async fn a_final_failure_not_run_again_keeps_its_causes_and_marks() {
    for (name, store) in every_store("recovered_errors").await {
        let engine =
            SagaEngine::with_store(Arc::clone(&store)).with_lease_ttl(Duration::from_secs(5));
        let fingerprint = engine.register(saga()).await.unwrap();
        let id = saga_core::ExecutionId::new("checkout-1");
        // A crashed owner's log, with a lease that expires at once.
        let Created::New(lease) = store
            .create(
                NewExecution {
                    id: id.clone(),
                    saga: "checkout".into(),
                    fingerprint,
                    context: "null".into(),
                    events: vec![event(1, EventKind::StepStarted, 0)],
                },
                "crashed-owner",
                Duration::from_millis(1),
            )
            .await
            .unwrap()
        else {
            panic!("{name}: the execution exists already");
        };
        let mut failed = event(4, EventKind::StepFailed, 1);
        failed.error = Some("charge refused".into());
        failed.detail =
            Some(r#"{"causes":["card 4242 declined by the issuer"],"permanent":true}"#.into());
        failed.will_retry = false;
        store
            .append(
                &id,
                &lease,
                vec![
                    event(2, EventKind::StepSucceeded, 0),
                    event(3, EventKind::StepStarted, 1),
                    failed,
                ],
                ExecutionStatus::Running,
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;

        engine.recover().await.unwrap();
        let outcome = engine.wait(&id).await;
        let Err(WaitError::Saga(SagaError::Compensated {
            step,
            error,
            report,
            ..
        })) = outcome
        else {
            panic!("{name}: expected a compensated run, got {outcome:?}");
        };
        assert_eq!(&*step, "charge", "{name}");
        assert_eq!(error.to_string(), "charge refused", "{name}");
        let logged = error
            .downcast_ref::<LoggedError>()
            .unwrap_or_else(|| panic!("{name}: not the logged form: {error:?}"));
        assert_eq!(
            logged.causes(),
            vec!["card 4242 declined by the issuer"],
            "{name}"
        );
        assert!(logged.is_permanent(), "{name}");
        assert!(!logged.is_outcome_unknown(), "{name}");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("card 4242 declined by the issuer"),
            "{name}"
        );
        let statuses: Vec<_> = report.steps.iter().map(|s| s.status).collect();
        assert_eq!(
            statuses,
            [StepStatus::Compensated, StepStatus::Failed],
            "{name}"
        );
        assert_eq!(report.status, ExecutionStatus::Compensated, "{name}");
    }
}
