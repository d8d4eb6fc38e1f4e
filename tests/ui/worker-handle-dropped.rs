// A worker's handle dropped at once stops the worker: the compiler says so.
#![deny(unused_must_use)]

use saga_core::store::MemoryStore;
use saga_core::{EngineError, SagaEngine, Worker};

fn start(engine: SagaEngine) -> Result<(), EngineError> {
    Worker::new(engine).spawn()?;
    Ok(())
}

fn main() {
    let _ = start(SagaEngine::new(MemoryStore::new()));
}
