//! `saga`: inspect and mend durable saga executions in a store. See the
//! `saga_cli` crate documentation, or `saga --help`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    saga_cli::tool_main().await
}
