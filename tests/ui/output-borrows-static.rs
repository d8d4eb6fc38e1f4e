// An output that serde reads only by borrowing from the log's text (here
// `&'static str`) cannot be logged, and cannot be told apart from one that
// can while the step's codec is chosen: the error points at the type.
use saga_core::{saga_task, Context, StepError};

#[saga_task]
fn label(ctx: &mut Context) -> Result<&'static str, StepError> {
    let _ = ctx;
    Ok("express")
}

fn main() {}
