//! Wall-clock helpers: nanosecond timestamps for `_modified_ts` and RFC 3339 text, without a
//! calendar crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// A nanosecond timestamp (as `_modified_ts` holds them) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_from_nanos(nanos: i64) -> String {
    rfc3339((nanos.max(0) / 1_000_000_000) as u64)
}

/// A nanosecond timestamp as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, as SQL timestamps
/// keep them).
pub fn rfc3339_micros(nanos: i64) -> String {
    let nanos = nanos.max(0);
    let seconds = rfc3339((nanos / 1_000_000_000) as u64);
    format!(
        "{}.{:06}Z",
        seconds.trim_end_matches('Z'),
        nanos % 1_000_000_000 / 1_000
    )
}

fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_669_446_008), "2022-11-26T07:00:08Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
