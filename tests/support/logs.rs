//! A logger that keeps every record for a test binary to read: its level
//! and message in [`RECORDS`], and with its target and key-values in
//! [`ENTRIES`]. Installed once per binary, at the level the first caller
//! asks.
#![allow(dead_code)]

use std::sync::{Mutex, Once};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// The records so far: level and message.
pub struct Records(pub Mutex<Vec<(Level, String)>>);

/// The one logger of the binary.
pub static RECORDS: Records = Records(Mutex::new(Vec::new()));

/// One record in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub target: String,
    pub level: Level,
    pub message: String,
    /// The key-values, in the record's order, each value as it displays.
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// The value of `key`, if the record has it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every record so far, with its key-values.
pub static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The records whose `key` is `value` (tests run in parallel: each picks
/// its own saga's records).
pub fn entries_where(key: &str, value: &str) -> Vec<Entry> {
    ENTRIES
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.field(key) == Some(value))
        .cloned()
        .collect()
}

struct Collect(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

impl Log for Records {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let message = record.args().to_string();
        let mut fields = Collect(Vec::new());
        record.key_values().visit(&mut fields).unwrap();
        ENTRIES.lock().unwrap().push(Entry {
            target: record.target().to_owned(),
            level: record.level(),
            message: message.clone(),
            fields: fields.0,
        });
        self.0.lock().unwrap().push((record.level(), message));
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
