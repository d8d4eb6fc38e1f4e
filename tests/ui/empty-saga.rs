use saga_core::saga;

struct Shop;

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
    };
}
