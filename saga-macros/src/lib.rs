//! Procedural macros for `saga-core`: `saga!` and `#[saga_task]`.
//!
//! Use them through `saga_core`, which re-exports both.

use proc_macro::TokenStream;

/// Declares a saga from annotated step functions (being built; see the macros issue).
#[proc_macro]
pub fn saga(input: TokenStream) -> TokenStream {
    let _ = input;
    quote::quote!(::core::compile_error!("`saga!` is not implemented yet")).into()
}

/// Turns a function into a saga step (being built; see the macros issue).
#[proc_macro_attribute]
pub fn saga_task(args: TokenStream, item: TokenStream) -> TokenStream {
    let _ = args;
    item
}
