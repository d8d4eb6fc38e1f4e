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
struct Parallel;
struct Duration;
struct Codec;
struct Durable;
struct InMemory;
mod core {}
mod std {}
mod serde {}

/// A trait of the user's whose method every value has, in scope where the
/// expansion picks a step's output codec by method lookup.
trait Describe {
    fn codec(&self) -> &'static str {
        "user"
    }
}
impl<T: ?Sized> Describe for T {}

mod types {
    pub type Result<T> = ::core::result::Result<T, saga_core::StepError>;
}

struct Shop {
    log: Vec<&'static str>,
    packed: ::std::sync::atomic::AtomicU32,
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

#[saga_task(undo = unpack)]
async fn pack(shop: &Shop) -> types::Result<u32> {
    shop.packed.fetch_add(1, ::std::sync::atomic::Ordering::SeqCst);
    ::core::result::Result::Ok(1)
}

#[saga_task]
fn unpack(shop: &Shop, n: ::core::option::Option<&u32>) -> types::Result<()> {
    let _ = n;
    shop.packed.fetch_sub(1, ::std::sync::atomic::Ordering::SeqCst);
    ::core::result::Result::Ok(())
}

#[saga_task]
fn label(shop: &Shop) -> types::Result<()> {
    let _ = shop.packed.load(::std::sync::atomic::Ordering::SeqCst);
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
        parallel {
            step pack, retry 2;
            step label;
        }
        pivot ship;
    };
    let mut shop = Shop { log: Vec::new(), packed: ::std::sync::atomic::AtomicU32::new(0) };
    let _ = saga.run_blocking(&mut shop);
}
