//! The caller's deadline, visible to everything a call does.
//!
//! The middleware reads `grpc-timeout` and runs the call inside [`scope`]; provider adapters
//! ask [`remaining`] before they sleep for a retry, so that retries stay inside the caller's
//! deadline and the last provider error (not a bare DEADLINE_EXCEEDED) reaches the caller.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Parses a `grpc-timeout` header value (`100m`, `5S`, ...).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Runs `future` with `timeout` from now as the deadline (or none).
pub async fn scope<F: Future>(timeout: Option<Duration>, future: F) -> F::Output {
    match timeout {
        Some(timeout) => DEADLINE.scope(Instant::now() + timeout, future).await,
        None => future.await,
    }
}

/// The time left before the current call's deadline, if it has one.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[tokio::test]
    async fn remaining_is_scoped() {
        assert_eq!(remaining(), None);
        scope(Some(Duration::from_secs(10)), async {
            let left = remaining().unwrap();
            assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10));
        })
        .await;
    }
}
