//! Wall-clock time in the API's timestamp type (k8s-openapi's chrono is built without its
//! clock feature, so the time comes from `SystemTime`).

use k8s_openapi::chrono::{DateTime, Utc};
use std::time::{SystemTime, UNIX_EPOCH};

/// The current time, to the nanosecond.
pub fn now() -> DateTime<Utc> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    DateTime::from_timestamp(secs, since.subsec_nanos()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2025() {
        assert!(super::now().timestamp() > 1_735_689_600);
    }
}
