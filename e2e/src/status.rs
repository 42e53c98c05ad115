//! Reading a HeartbeatMonitor's status in tests (as JSON from kubectl),
//! and waiting for a condition by polling: the one place these rules live.

use std::time::{Duration, Instant};

use serde_json::Value;

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

/// A status count (0 when absent).
pub fn count(status: &Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or(0)
}

/// Condition `type` of a status (Null when absent).
pub fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// The listed member whose programId or pod is `who`.
pub fn member<'a>(status: &'a Value, who: &str) -> Option<&'a Value> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["programId"] == who || m["pod"] == who)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_conditions_and_members_read_from_status_json() {
        let s = json!({
            "up": 2,
            "conditions": [{"type": "Ready", "status": "True"}],
            "members": [{"programId": "a", "pod": "p-a", "state": "Up"}],
        });
        assert_eq!((count(&s, "up"), count(&s, "stale")), (2, 0));
        assert_eq!(condition(&s, "Ready")["status"], "True");
        assert!(condition(&s, "Healthy").is_null());
        assert_eq!(member(&s, "p-a").map(|m| &m["state"]), Some(&json!("Up")));
        assert!(member(&s, "b").is_none());
        assert_eq!(
            eventually("at once", Duration::from_secs(1), || Ok::<_, String>(7)),
            7
        );
    }
}
