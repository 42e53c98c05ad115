//! Waiting for a condition by polling, with a deadline: the one place
//! that rule lives (the status itself is read typed, see [`crate::monitor`]).

use std::time::{Duration, Instant};

/// Calls `probe` every half second until it returns `Ok`; panics after
/// `timeout` with `what` and the last `Err`.
pub fn eventually<V>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<V, String>,
) -> V {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; last:\n{last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_returns_the_first_ok() {
        let mut polls = 0;
        let got = eventually("the third poll", Duration::from_secs(5), || {
            polls += 1;
            if polls == 3 {
                Ok(polls)
            } else {
                Err(format!("poll {polls}"))
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "never: not within")]
    fn eventually_panics_with_the_last_error_after_the_timeout() {
        eventually("never", Duration::from_millis(1), || {
            Err::<(), _>("no".to_string())
        });
    }
}
