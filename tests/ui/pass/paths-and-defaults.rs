//! Steps named by path from another module, `pub(crate)` functions, the
//! default context (`saga_core::Context`, when `context:` is left out),
//! `&C` contexts, async compensations and raw identifiers; no warnings,
//! not even for a task that no saga uses yet.

#![deny(warnings)]

mod orders {
    use saga_core::{Context, StepError, StepInfo, saga_task};

    #[saga_task(undo = cancel)]
    pub(crate) fn create(ctx: &mut Context) -> Result<u64, StepError> {
        ctx.insert("order", 7_u64);
        Ok(7)
    }

    #[saga_task]
    pub(crate) async fn cancel(
        ctx: &mut Context,
        order: Option<&u64>,
        info: &StepInfo<'_>,
    ) -> Result<(), StepError> {
        let _ = (order, info.idempotency_key());
        ctx.remove::<u64>("order")?;
        Ok(())
    }

    /// Not in any saga: the function is still used by nobody, and no
    /// warning says so for the hidden twin either.
    #[saga_task(pivot)]
    pub fn unused_yet(_: &mut Context) -> Result<(), StepError> {
        Ok(())
    }

    #[saga_task(name = "check")]
    pub fn r#check(ctx: &Context) -> Result<(), StepError> {
        ctx.get::<u64>("order")?;
        Ok(())
    }
}

fn main() {
    let saga = saga_core::saga! {
        name: "paths",
        step orders::create;
        step self::orders::r#check;
    };
    let mut ctx = saga_core::Context::new();
    let report = saga.run_blocking(&mut ctx).unwrap();
    assert_eq!(report.steps[1].name.as_ref(), "check");
}
