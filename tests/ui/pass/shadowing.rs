//! User code that shadows the prelude and common names still compiles:
//! the expansions name std and the runtime by absolute paths.

#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)]

use saga_core::{saga, saga_task, StepInfo};

struct Result;
struct Ok;
struct Err;
struct Option;
struct Box;
struct Context;
struct Some;
struct None;
struct Step;
struct Saga;
struct Duration;
mod core {}
mod std {}

mod types {
    pub type Result<T> = ::core::result::Result<T, saga_core::StepError>;
}

struct Shop {
    log: Vec<&'static str>,
}

#[saga_task(undo = release, retry(attempts = 2, backoff = "1ms"), metadata(team = "shop"))]
fn reserve(shop: &mut Shop) -> types::Result<u32> {
    shop.log.push("reserve");
    ::core::result::Result::Ok(7)
}

#[saga_task]
fn release(shop: &mut Shop, item: ::core::option::Option<&u32>) -> types::Result<()> {
    let _ = item;
    shop.log.push("release");
    ::core::result::Result::Ok(())
}

#[saga_task(timeout = "1s")]
async fn notify(shop: &mut Shop, info: &StepInfo<'_>) -> types::Result<()> {
    let _ = info.attempt();
    shop.log.push("notify");
    ::core::result::Result::Ok(())
}

#[saga_task(pivot)]
fn ship(shop: &mut Shop) -> types::Result<()> {
    shop.log.push("ship");
    ::core::result::Result::Ok(())
}

fn main() {
    let saga = saga! {
        name: "shadowed",
        context: Shop,
        step reserve, retry forever;
        step notify, timeout 500ms;
        pivot ship;
    };
    let mut shop = Shop { log: Vec::new() };
    let _ = saga.run_blocking(&mut shop);
}
