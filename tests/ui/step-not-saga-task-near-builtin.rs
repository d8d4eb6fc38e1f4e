// rustc alone would say "expected type, found function `charge`" and
// suggest the builtin type `char`.
use saga_core::{saga, StepError};

struct Shop;

fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge;
    };
}
