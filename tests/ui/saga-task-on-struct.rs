use saga_core::saga_task;

struct Shop;

#[saga_task]
struct Charge;

fn main() {}
