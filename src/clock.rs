//! The wall clock in Unix seconds: what sessions, tokens, signed requests, readings and record
//! blocks carry. One definition, so that every part reads the same clock the same way.

/// Seconds since the Unix epoch; 0 for a clock set before it.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
