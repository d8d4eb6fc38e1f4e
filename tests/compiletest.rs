//! Compile-time checks of `saga!` and `#[saga_task]`: every error message
//! has a case in `tests/ui/` with its expected `.stderr`; `tests/ui/pass/`
//! holds inputs that must compile. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test --test compiletest`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
