//! Output: JSON documents, column fitting and UTC times shared by the commands.

use saga_core::store::ExecutionRecord;
use serde::Serialize;

/// An execution, as `--json` prints it.
#[derive(Serialize)]
pub(crate) struct ExecutionJson<'a> {
    id: &'a str,
    saga: &'a str,
    fingerprint: &'a str,
    status: &'a str,
    created_at_ms: i64,
    updated_at_ms: i64,
    owner: Option<&'a str>,
    lease_expires_at_ms: Option<i64>,
    cancel_requested: bool,
    resume_requested: bool,
}

pub(crate) fn execution_json<'a>(
    record: &'a ExecutionRecord,
    resume_requested: bool,
) -> ExecutionJson<'a> {
    ExecutionJson {
        id: record.id.as_str(),
        saga: &record.saga,
        fingerprint: &record.fingerprint,
        status: record.status.label(),
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
        owner: record.owner.as_deref(),
        lease_expires_at_ms: record.lease_expires_at_ms,
        cancel_requested: record.cancel_requested,
        resume_requested,
    }
}

pub(crate) fn to_json(value: &impl Serialize) -> String {
    // Serializing strings, numbers and booleans cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Cuts `text` to `width` characters, ending in `…` when cut.
pub(crate) fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

pub(crate) fn seconds(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.3}s", ms as f64 / 1000.0),
    )
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM` (UTC), with seconds and
/// milliseconds when `precise`.
pub(crate) fn utc(ms: i64, precise: bool) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    if precise {
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03} UTC")
    } else {
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0, true), "1970-01-01 00:00:00.000 UTC");
        // 2024-02-29 23:59:59.999, a leap day.
        assert_eq!(utc(1_709_251_199_999, true), "2024-02-29 23:59:59.999 UTC");
        assert_eq!(utc(1_764_159_720_000, false), "2025-11-26 12:22");
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("order", 13), "order");
        assert_eq!(fit("a-very-long-saga-name", 13), "a-very-long-…");
        assert_eq!(fit("a-very-long-…", 13).chars().count(), 13);
    }
}
