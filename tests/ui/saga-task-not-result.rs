use saga_core::saga_task;

struct Shop;

#[saga_task]
fn charge(_: &mut Shop) -> u64 { 1 }

fn main() {}
