//! The service's clock: the scheduler's ticks, the times the history records (submitted,
//! started, finished) and the retries' delays all read it, so that one driven clock (`weir
//! serve --clock-file`, for tests) moves all of them together.

use chrono::{DateTime, Utc};

/// Where the service gets the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock read from a file holding an RFC 3339 time (`weir serve --clock-file`, for tests
/// that drive the scheduler through days in seconds). Falls back to the system clock while
/// the file is missing or unreadable.
pub struct FileClock(pub std::path::PathBuf);

impl Clock for FileClock {
    fn now(&self) -> DateTime<Utc> {
        std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|text| DateTime::parse_from_rfc3339(text.trim()).ok())
            .map(|time| time.with_timezone(&Utc))
            .unwrap_or_else(Utc::now)
    }
}
