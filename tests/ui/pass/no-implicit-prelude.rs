// A module without the implicit prelude: the expansions name nothing of
// std's prelude (`Sized`, `Send`, `Option`, ...) nor the `diagnostic`
// tool module by a relative path.
#![no_implicit_prelude]

mod shop {
    use ::saga_core::{saga, saga_task, StepError};
    use ::core::option::Option;
    use ::core::result::Result;

    pub struct Cart {
        pub n: u64,
    }

    #[saga_task(undo = undo_add)]
    pub fn add(c: &mut Cart) -> Result<u64, StepError> {
        c.n += 1;
        Result::Ok(c.n)
    }

    #[saga_task]
    pub fn undo_add(c: &mut Cart, _o: Option<&u64>) -> Result<(), StepError> {
        c.n = 0;
        Result::Ok(())
    }

    #[saga_task(timeout = "1s")]
    pub async fn check(c: &Cart) -> Result<(), StepError> {
        let _ = c.n;
        Result::Ok(())
    }

    #[saga_task]
    pub fn pay(c: &mut Cart, _info: &::saga_core::StepInfo<'_>) -> Result<(), StepError> {
        let _ = c.n;
        Result::Ok(())
    }

    pub fn cart() -> ::saga_core::Saga<Cart> {
        saga! {
            name: "cart",
            context: Cart,
            step add;
            step check, retry 2;
            parallel { step check, name "again"; }
            step pay;
        }
    }
}

fn main() {
    let _ = shop::cart();
}
