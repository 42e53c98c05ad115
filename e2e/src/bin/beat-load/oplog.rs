//! What the operator's log says: the Events it published and how many
//! WARN and ERROR lines it wrote.

/// The Events the operator's log says it published: (time µs, reason,
/// program). kube's Recorder folds an Event whose type, reason, action,
/// regarding and related object repeat within its cache TTL into the
/// first one's series, note included, so a second external program of
/// one monitor going Stale shows in the API only as `series.count` of the
/// first program's Event; the log line (written just before the API call)
/// names every one.
pub fn published_events(log: &str) -> Vec<(i64, String, String)> {
    log.lines()
        .filter(|l| l.contains("heartbeat_operator::controller::events: event "))
        .filter_map(|l| {
            let at = heartbeat_crds::beat::parse_timestamp(l.split(' ').next()?).ok()?;
            let reason = l.split_once(" reason=")?.1.split(' ').next()?.to_string();
            let program = l
                .split_once("note=Some(\"program ")?
                .1
                .split([' ', ')'])
                .next()?
                .to_string();
            Some((at.as_microsecond(), reason, program))
        })
        .collect()
}

/// (WARN lines, ERROR lines) of the log.
pub fn warns_and_errors(log: &str) -> (usize, usize) {
    log.lines().fold((0, 0), |(w, e), l| {
        (
            w + usize::from(l.contains(" WARN ")),
            e + usize::from(l.contains(" ERROR ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_events_are_read_from_the_operator_log() {
        let log = "2026-11-27T10:38:49.477773Z  INFO reconciling object{object.ref=HeartbeatMonitor.v1alpha1.heartbeat.dev/scale-000.hb-scale-520301871 object.reason=reconciler requested retry}: heartbeat_operator::controller::events: event monitor=Some(\"scale-000\") reason=HeartbeatStale note=Some(\"program scale-m000-p0000 is Stale: no beat for over 35s\")\nnot an event line";
        let got = published_events(log);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, "HeartbeatStale");
        assert_eq!(got[0].2, "scale-m000-p0000");
        assert!(got[0].0 > 1_700_000_000_000_000);
    }
}
