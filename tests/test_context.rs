//! The default context, a typed key-value map whose lookups fail as
//! values (usable with `?` in a step), and what a step knows of its run
//! (`StepInfo`).

mod support;

use saga_core::{
    Context, ContextError, ExecutionId, RunOptions, Saga, SagaError, Step, StepError, StepInfo,
};
use support::steps::user_error;

#[test]
fn insert_get_get_mut_remove() {
    let mut ctx = Context::new();
    assert!(ctx.is_empty());
    assert!(!ctx.insert("order_id", 42_u64));
    assert!(
        ctx.insert("order_id", 43_u64),
        "a replaced value is reported"
    );
    ctx.insert("customer", "ada".to_owned());

    assert_eq!(ctx.get::<u64>("order_id"), Ok(&43));
    *ctx.get_mut::<u64>("order_id").unwrap() += 1;
    assert_eq!(ctx.get::<u64>("order_id"), Ok(&44));
    assert_eq!(ctx.len(), 2);
    assert!(ctx.contains_key("customer"));
    assert_eq!(ctx.remove::<String>("customer"), Ok("ada".to_owned()));
    assert!(!ctx.contains_key("customer"));
    assert_eq!(ctx.len(), 1);
    assert_eq!(format!("{ctx:?}"), r#"{"order_id": "u64"}"#);
}

#[test]
fn a_missing_key_is_an_error_value() {
    let mut ctx = Context::new();
    let err = ctx.get::<u64>("order_id").unwrap_err();
    assert_eq!(
        err,
        ContextError::Missing {
            key: "order_id".into()
        }
    );
    assert_eq!(err.to_string(), "context has no value under `order_id`");
    assert!(matches!(
        ctx.get_mut::<u64>("order_id"),
        Err(ContextError::Missing { .. })
    ));
    assert!(matches!(
        ctx.remove::<u64>("order_id"),
        Err(ContextError::Missing { .. })
    ));
}

#[test]
fn a_wrong_type_is_an_error_value_and_loses_nothing() {
    let mut ctx = Context::new();
    ctx.insert("order_id", 42_u64);
    let err = ctx.get::<String>("order_id").unwrap_err();
    assert_eq!(
        err,
        ContextError::WrongType {
            key: "order_id".into(),
            expected: "alloc::string::String",
            found: "u64".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "context value `order_id` is a `u64`, not a `alloc::string::String`"
    );
    assert!(matches!(
        ctx.get_mut::<i32>("order_id"),
        Err(ContextError::WrongType { .. })
    ));
    // A remove of the wrong type leaves the value where it was.
    assert!(matches!(
        ctx.remove::<i32>("order_id"),
        Err(ContextError::WrongType { .. })
    ));
    assert_eq!(ctx.get::<u64>("order_id"), Ok(&42));
}

fn order_saga() -> Saga {
    Saga::builder("order")
        .step(
            Step::new("create_order", |ctx: &mut Context, _: &StepInfo<'_>| {
                ctx.insert("order_id", 42_u64);
                ctx.insert("log", vec!["order created".to_owned()]);
                Ok::<_, StepError>(())
            })
            .undo(|ctx: &mut Context, _: Option<&()>, _: &StepInfo<'_>| {
                ctx.remove::<u64>("order_id")?;
                ctx.get_mut::<Vec<String>>("log")?
                    .push("order cancelled".into());
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new(
            "charge",
            |ctx: &mut Context, _: &StepInfo<'_>| {
                // `?` turns a lookup failure into the step's error.
                let amount = *ctx.get::<u32>("amount")?;
                let order = *ctx.get::<u64>("order_id")?;
                ctx.get_mut::<Vec<String>>("log")?
                    .push(format!("charged {amount} for order {order}"));
                Ok::<_, StepError>(())
            },
        ))
        .build()
        .unwrap()
}

#[test]
fn context_lookups_work_with_question_mark_in_steps() {
    let mut ctx = Context::new();
    ctx.insert("amount", 990_u32);
    order_saga().run_blocking(&mut ctx).unwrap();
    assert_eq!(
        ctx.get::<Vec<String>>("log").unwrap(),
        &["order created", "charged 990 for order 42"]
    );
}

#[test]
fn a_missing_key_in_a_step_rolls_back_with_the_context_error_as_source() {
    let mut ctx = Context::new();
    let err = order_saga().run_blocking(&mut ctx).unwrap_err();

    assert!(matches!(err, SagaError::Compensated { ref step, .. } if &**step == "charge"));
    assert_eq!(
        user_error::<ContextError>(&err),
        &ContextError::Missing {
            key: "amount".into()
        }
    );
    assert_eq!(
        ctx.get::<Vec<String>>("log").unwrap(),
        &["order created", "order cancelled"]
    );
    assert!(!ctx.contains_key("order_id"));
}

#[test]
fn a_wrong_type_in_a_step_rolls_back_with_the_context_error_as_source() {
    let mut ctx = Context::new();
    ctx.insert("amount", 990_i64);
    let err = order_saga().run_blocking(&mut ctx).unwrap_err();
    assert!(matches!(
        user_error::<ContextError>(&err),
        ContextError::WrongType { key, found, .. } if key == "amount" && found == "i64"
    ));
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "context value `amount` is a `i64`, not a `u32`"
    );
}

#[test]
fn step_info_names_the_saga_execution_step_attempt_and_key() {
    #[derive(Default)]
    struct Seen(Vec<String>);
    let describe = |who: &str, info: &StepInfo<'_>| {
        format!(
            "{who}: saga={} execution={} step={} attempt={} key={}",
            info.saga(),
            info.execution_id(),
            info.step(),
            info.attempt(),
            info.idempotency_key()
        )
    };
    let saga = Saga::builder("checkout")
        .step(
            Step::new("reserve", move |s: &mut Seen, info: &StepInfo<'_>| {
                s.0.push(describe("action", info));
                Ok::<_, StepError>(())
            })
            .undo(move |s: &mut Seen, _: Option<&()>, info: &StepInfo<'_>| {
                s.0.push(describe("undo", info));
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("pay", |_: &mut Seen, _: &StepInfo<'_>| {
            Err::<(), _>("no funds")
        }))
        .build()
        .unwrap();
    let mut seen = Seen::default();
    let options = RunOptions::new().with_execution_id("order-42");
    let err = saga.run_blocking_with(&mut seen, options).unwrap_err();

    assert_eq!(
        seen.0,
        [
            "action: saga=checkout execution=order-42 step=reserve attempt=1 key=order-42/reserve",
            "undo: saga=checkout execution=order-42 step=reserve attempt=1 key=order-42/reserve",
        ]
    );
    assert_eq!(err.report().execution_id, ExecutionId::new("order-42"));
}

#[test]
fn step_info_can_be_built_by_hand_to_unit_test_a_step() {
    let id = ExecutionId::new("e1");
    let info = StepInfo::new("s", &id, "charge", 2);
    assert_eq!(
        (info.saga(), info.step(), info.attempt()),
        ("s", "charge", 2)
    );
    assert_eq!(info.idempotency_key(), "e1/charge");
}

#[test]
fn any_user_type_is_a_context() {
    struct Account {
        balance: i64,
    }
    let saga = Saga::builder("transfer")
        .step(
            Step::new("debit", |a: &mut Account, _: &StepInfo<'_>| {
                a.balance -= 30;
                Ok::<_, StepError>(30_i64)
            })
            .undo(|a: &mut Account, amount: Option<&i64>, _: &StepInfo<'_>| {
                a.balance += amount.copied().unwrap_or(0);
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("credit", |_: &mut Account, _: &StepInfo<'_>| {
            Err::<(), _>("the other bank is closed")
        }))
        .build()
        .unwrap();
    let mut account = Account { balance: 100 };
    saga.run_blocking(&mut account).unwrap_err();
    assert_eq!(account.balance, 100);
}
