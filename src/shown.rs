//! How times and rates are written wherever modelferry shows them
//! (`status`, receipts, log lines), so each reads the same everywhere.

use std::time::SystemTime;

use indicatif::HumanBytes;

/// `t` as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An upload rate limit (`upload.max_rate`): `"40.00 MiB/s"`, or
/// `"no limit"` for 0.
pub fn rate_limit(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "no limit".into()
    } else {
        format!("{}/s", HumanBytes(bytes_per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_reads_as_bytes_per_second_or_no_limit() {
        assert_eq!(rate_limit(0), "no limit");
        assert_eq!(rate_limit(40 * 1024 * 1024), "40.00 MiB/s");
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:01.500Z");
    }
}
