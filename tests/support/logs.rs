//! A logger that keeps every record (level and message) for a test binary
//! to read: installed once per binary, at the level the first caller asks.

use std::sync::{Mutex, Once};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The records so far.
pub struct Records(pub Mutex<Vec<(Level, String)>>);

/// The one logger of the binary.
pub static RECORDS: Records = Records(Mutex::new(Vec::new()));

impl Log for Records {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }

    fn flush(&self) {}
}

/// Installs [`RECORDS`] as the logger, keeping records up to `level`.
pub fn install_logger(level: LevelFilter) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&RECORDS).unwrap();
        log::set_max_level(level);
    });
}
