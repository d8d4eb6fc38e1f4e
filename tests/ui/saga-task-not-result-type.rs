use saga_core::{saga, saga_task};

struct Shop;

#[saga_task]
fn charge(_: &mut Shop) -> Option<u64> { Some(1) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge;
    };
}
