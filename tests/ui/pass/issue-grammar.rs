//! The saga of the issue that asked for the macros, written as it asked.

#![deny(warnings)]

use saga_core::{saga, saga_task, StepError};

#[derive(Default)]
struct OrderCtx {
    log: Vec<&'static str>,
}

#[saga_task]
fn validate_cart(ctx: &OrderCtx) -> Result<(), StepError> {
    let _ = ctx.log.len();
    Ok(())
}

#[saga_task]
fn create_order(ctx: &mut OrderCtx) -> Result<u64, StepError> {
    ctx.log.push("create_order");
    Ok(1)
}

#[saga_task]
fn cancel_order(ctx: &mut OrderCtx, _order: Option<&u64>) -> Result<(), StepError> {
    ctx.log.push("cancel_order");
    Ok(())
}

#[saga_task]
async fn charge_payment(ctx: &mut OrderCtx) -> Result<String, StepError> {
    ctx.log.push("charge_payment");
    Ok("ch_1".into())
}

#[saga_task]
async fn refund_payment(ctx: &mut OrderCtx, _charge: Option<&String>) -> Result<(), StepError> {
    ctx.log.push("refund_payment");
    Ok(())
}

#[saga_task]
fn ship_order(ctx: &mut OrderCtx) -> Result<(), StepError> {
    ctx.log.push("ship_order");
    Ok(())
}

#[saga_task]
fn send_receipt(ctx: &mut OrderCtx) -> Result<(), StepError> {
    ctx.log.push("send_receipt");
    Ok(())
}

fn main() {
    let order = saga! {
        name: "order",
        context: OrderCtx,
        step validate_cart;
        step create_order => undo cancel_order;
        step charge_payment => undo refund_payment, retry 3, timeout 2s;
        pivot ship_order;
        step send_receipt, retry forever;
    };
    let mut ctx = OrderCtx::default();
    order.run_blocking(&mut ctx).unwrap();
    assert_eq!(
        ctx.log,
        ["create_order", "charge_payment", "ship_order", "send_receipt"]
    );
}
