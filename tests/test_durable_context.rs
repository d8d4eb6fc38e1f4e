//! The default `Context` through its durable encoding: what a log holds,
//! and what a recovered run reads back.

use saga_core::{Context, ContextError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reservation {
    sku: String,
    count: u32,
}

fn round_trip(ctx: &Context) -> Context {
    serde_json::from_str(&serde_json::to_string(ctx).unwrap()).unwrap()
}

#[test]
fn values_are_stored_as_json_with_their_type_name_and_sorted_keys() {
    let mut ctx = Context::new();
    ctx.insert("order_id", 42_u64);
    ctx.insert(
        "reservation",
        Reservation {
            sku: "book-7".into(),
            count: 2,
        },
    );
    assert_eq!(
        serde_json::to_string(&ctx).unwrap(),
        r#"{"order_id":{"type":"u64","value":42},"reservation":{"type":"test_durable_context::Reservation","value":{"count":2,"sku":"book-7"}}}"#
    );
}

#[test]
fn a_context_read_back_decodes_each_value_on_its_first_typed_read() {
    let mut ctx = Context::new();
    ctx.insert("order_id", 42_u64);
    ctx.insert("note", String::from("leave at the door"));
    let mut back = round_trip(&ctx);
    assert_eq!(back.len(), 2);
    assert_eq!(back.get::<u64>("order_id"), Ok(&42));
    *back.get_mut::<String>("note").unwrap() = "ring twice".into();
    // What changed is what the next log entry holds.
    let again = round_trip(&back);
    assert_eq!(
        again.get::<String>("note").map(String::as_str),
        Ok("ring twice")
    );
    assert_eq!(again.get::<u64>("order_id"), Ok(&42));
    assert_eq!(back.remove::<u64>("order_id"), Ok(42));
    assert!(!back.contains_key("order_id"));
}

#[test]
fn a_stored_value_that_no_longer_decodes_is_an_error_and_stays_stored() {
    let mut ctx = Context::new();
    ctx.insert("count", 3_u32);
    let back = round_trip(&ctx);
    assert_eq!(
        back.get::<Reservation>("count").unwrap_err().to_string(),
        "context value `count` (stored as a `u32`) does not decode as a `test_durable_context::Reservation`: invalid type: integer, expected struct Reservation"
    );
    // Nothing was lost: the right type still reads it, and it is still
    // written back as it was.
    assert_eq!(back.get::<u32>("count"), Ok(&3));
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        r#"{"count":{"type":"u32","value":3}}"#
    );
}

#[test]
fn the_first_typed_read_fixes_a_decoded_values_type() {
    let mut ctx = Context::new();
    ctx.insert("n", 7_u64);
    let back = round_trip(&ctx);
    assert_eq!(back.get::<u64>("n"), Ok(&7));
    assert!(matches!(
        back.get::<i64>("n"),
        Err(ContextError::WrongType { .. })
    ));
}
