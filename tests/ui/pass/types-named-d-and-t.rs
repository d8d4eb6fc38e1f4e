//! User types named `D` and `T`, the names of the generated impls' type
//! parameters (chosen so that rustc's notes read `Task<C, D>`): a step or
//! compensation that names one gets a parameter it cannot shadow.

#![deny(warnings)]

use saga_core::{saga, saga_task, Provides, StepError, StepInfo};

/// The context is called `D`.
struct D {
    log: Vec<String>,
}

/// An output called `T`.
#[derive(Debug, PartialEq)]
struct T(u32);

/// A tool called `Tool`, and dependencies that provide it.
struct Tool;
struct Deps {
    tool: Tool,
}

impl Provides<Tool> for Deps {
    fn provide(&self) -> &Tool {
        &self.tool
    }
}

#[saga_task(undo = untake)]
fn take(d: &mut D, _tool: &Tool, info: &StepInfo<'_, Deps>) -> Result<T, StepError> {
    let _tool: &Tool = info.dependencies().provide();
    d.log.push("take".into());
    Ok(T(1))
}

#[saga_task]
fn untake(d: &mut D, t: Option<&T>) -> Result<(), StepError> {
    d.log.push(format!("untake {t:?}"));
    Ok(())
}

#[saga_task]
fn fail(_: &mut D) -> Result<(), StepError> {
    Err(StepError::new("no"))
}

fn main() {
    let saga = saga! {
        name: "d",
        context: D,
        dependencies: Deps,
        step take;
        step fail;
    };
    let deps = Deps { tool: Tool };
    let mut d = D { log: Vec::new() };
    assert!(saga.using(&deps).run_blocking(&mut d).is_err());
    assert_eq!(d.log, ["take", "untake Some(T(1))"]);
}
