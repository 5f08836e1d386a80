//! The caller's deadline, visible to everything a call does.
//!
//! The middleware reads `grpc-timeout` and runs the call inside [`scope`]; provider adapters
//! ask [`remaining`] before they sleep for a retry, so that retries stay inside the caller's
//! deadline and the last provider error (not a bare DEADLINE_EXCEEDED) reaches the caller; the
//! store runs what a caller waits on in [`bounded`], so that a store that does not answer is
//! reported as such before the deadline passes.

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

/// The time left before the current call's deadline less what answering takes (a tenth of it,
/// and 5 ms), if the call has a deadline.
pub fn usable() -> Option<Duration> {
    remaining().map(|left| {
        left.saturating_sub(left / 10)
            .saturating_sub(Duration::from_millis(5))
    })
}

/// Runs `future` to its end, or until [`usable`] runs out: `None` then, early enough that the
/// call can still answer why before its deadline. Without a deadline, runs it to its end.
pub async fn bounded<F: Future>(future: F) -> Option<F::Output> {
    match usable() {
        Some(left) => tokio::time::timeout(left, future).await.ok(),
        None => Some(future.await),
    }
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

    #[tokio::test]
    async fn bounded_keeps_time_to_answer() {
        assert_eq!(bounded(async { 7 }).await, Some(7));
        scope(Some(Duration::from_secs(1)), async {
            let (usable, left) = (usable().unwrap(), remaining().unwrap());
            assert!(usable < left && usable + Duration::from_millis(105) >= left);
        })
        .await;
        let ended = scope(Some(Duration::from_millis(100)), async {
            bounded(std::future::pending::<()>()).await
        })
        .await;
        assert_eq!(ended, None);
        let answered = scope(Some(Duration::from_secs(10)), bounded(async { 7 })).await;
        assert_eq!(answered, Some(7));
    }
}
