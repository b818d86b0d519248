//! Wall-clock instants as milliseconds since the unix epoch: how the origin stores and the control
//! plane sends them. One conversion serves `SystemTime` and `OffsetDateTime` alike; durations added to
//! or taken from such instants are whole milliseconds too ([`millis`]).

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

/// Milliseconds from the unix epoch to `at`: 0 for an instant before the epoch, saturating far after it.
pub fn unix_ms(at: impl Into<SystemTime>) -> u64 {
    at.into().duration_since(SystemTime::UNIX_EPOCH).map_or(0, millis)
}

/// The wall clock now, in milliseconds since the unix epoch.
pub fn unix_ms_now() -> u64 {
    unix_ms(SystemTime::now())
}

/// `duration` in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The instant `ms` milliseconds after the unix epoch; the epoch itself for one past the calendar.
pub fn from_unix_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_clock_types_give_the_same_milliseconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_960_800_123_999);
        assert_eq!(unix_ms(at), 1_795_960_800_123);
        assert_eq!(unix_ms(OffsetDateTime::from(at)), 1_795_960_800_123);
        assert_eq!(unix_ms(OffsetDateTime::UNIX_EPOCH), 0);
        assert_eq!(unix_ms(from_unix_ms(1_795_960_800_123)), 1_795_960_800_123);
        assert_eq!(from_unix_ms(u64::MAX), OffsetDateTime::UNIX_EPOCH);
    }

    #[test]
    fn instants_before_the_epoch_are_zero() {
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH - Duration::from_millis(1)), 0);
        assert_eq!(
            unix_ms(OffsetDateTime::UNIX_EPOCH - time::Duration::microseconds(500)),
            0
        );
        assert_eq!(unix_ms(OffsetDateTime::UNIX_EPOCH - time::Duration::days(1)), 0);
    }

    #[test]
    fn durations_are_whole_saturating_milliseconds() {
        assert_eq!(millis(Duration::from_micros(2_999)), 2);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn now_is_the_system_clock() {
        let before = unix_ms(SystemTime::now());
        let now = unix_ms_now();
        assert!(before <= now && now <= unix_ms(SystemTime::now()));
    }
}
