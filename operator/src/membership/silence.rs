//! When a monitor raises no alarm: `suspend: true`, or inside one of its
//! maintenance windows (a cron schedule of window starts, read in an IANA
//! time zone, DST included). Members are still tracked and counted.

use croner::Cron;
use croner::parser::CronParser;
use heartbeat_crds::conditions::reason;
use heartbeat_crds::monitor::{HeartbeatMonitorSpec, MaintenanceWindow};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Why alarms are silenced now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Silence {
    Suspended,
    /// Inside the window that started at `started` (schedule as written).
    Maintenance {
        schedule: String,
        ends: Timestamp,
    },
}

impl Silence {
    /// The condition reason that names it.
    pub fn reason(&self) -> &'static str {
        match self {
            Silence::Suspended => reason::SUSPENDED,
            Silence::Maintenance { .. } => reason::IN_MAINTENANCE,
        }
    }

    /// A sentence for a person.
    pub fn describe(&self) -> String {
        match self {
            Silence::Suspended => "alarms silenced by spec.suspend".into(),
            Silence::Maintenance { schedule, ends } => {
                format!("alarms silenced by maintenance window {schedule:?} until {ends}")
            }
        }
    }
}

/// A window the operator cannot evaluate (the schema checks the shape, not
/// the cron fields or the zone's existence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("maintenance window {schedule:?} ({time_zone}): {why}")]
pub struct BadWindow {
    pub schedule: String,
    pub time_zone: String,
    pub why: String,
}

fn parse(w: &MaintenanceWindow) -> Result<(Cron, TimeZone), BadWindow> {
    let bad = |why: String| BadWindow {
        schedule: w.schedule.clone(),
        time_zone: w.time_zone.clone(),
        why,
    };
    let cron = CronParser::new()
        .parse(&w.schedule)
        .map_err(|e| bad(e.to_string()))?;
    let tz = TimeZone::get(&w.time_zone).map_err(|e| bad(e.to_string()))?;
    Ok((cron, tz))
}

/// Whether `w` is active at `now`: some start `s` of the schedule has
/// `s <= now < s + duration`. Found as the first start after `now - duration`.
fn active(w: &MaintenanceWindow, now: Timestamp) -> Result<Option<Timestamp>, BadWindow> {
    let (cron, tz) = parse(w)?;
    let duration = SignedDuration::from_mins(i64::from(w.duration_minutes));
    let from = (now - duration).to_zoned(tz);
    match cron.find_next_occurrence(&from, false) {
        Ok(start) if start.timestamp() <= now => Ok(Some(start.timestamp() + duration)),
        Ok(_) => Ok(None),
        Err(e) => Err(BadWindow {
            schedule: w.schedule.clone(),
            time_zone: w.time_zone.clone(),
            why: e.to_string(),
        }),
    }
}

/// Why alarms are silenced at `now`, if they are, and the windows that
/// could not be read (reported, and not silencing anything).
pub fn silence(spec: &HeartbeatMonitorSpec, now: Timestamp) -> (Option<Silence>, Vec<BadWindow>) {
    if spec.suspend {
        return (Some(Silence::Suspended), Vec::new());
    }
    let mut bad = Vec::new();
    for w in &spec.maintenance_windows {
        match active(w, now) {
            Ok(Some(ends)) => {
                return (
                    Some(Silence::Maintenance {
                        schedule: w.schedule.clone(),
                        ends,
                    }),
                    bad,
                );
            }
            Ok(None) => {}
            Err(e) => bad.push(e),
        }
    }
    (None, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(schedule: &str, minutes: u32, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            schedule: schedule.into(),
            duration_minutes: minutes,
            time_zone: tz.into(),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_window_is_active_from_its_start_for_its_duration() {
        let w = window("0 2 * * SUN", 60, "UTC");
        // 2026-11-29 is a Sunday.
        assert_eq!(active(&w, at("2026-11-29T01:59:59Z")), Ok(None));
        assert_eq!(
            active(&w, at("2026-11-29T02:00:00Z")),
            Ok(Some(at("2026-11-29T03:00:00Z")))
        );
        assert!(
            active(&w, at("2026-11-29T02:59:59Z"))
                .expect("ok")
                .is_some()
        );
        assert_eq!(active(&w, at("2026-11-29T03:00:00Z")), Ok(None));
        assert_eq!(active(&w, at("2026-11-30T02:30:00Z")), Ok(None));
    }

    #[test]
    fn the_schedule_is_read_in_its_time_zone_across_dst() {
        let w = window("0 2 * * *", 60, "Europe/Berlin");
        // Winter: 02:00 CET is 01:00 UTC.
        assert!(
            active(&w, at("2026-01-15T01:30:00Z"))
                .expect("ok")
                .is_some()
        );
        assert_eq!(active(&w, at("2026-01-15T02:30:00Z")), Ok(None));
        // Summer: 02:00 CEST is 00:00 UTC.
        assert!(
            active(&w, at("2026-07-15T00:30:00Z"))
                .expect("ok")
                .is_some()
        );
        assert_eq!(active(&w, at("2026-07-15T01:30:00Z")), Ok(None));
    }

    #[test]
    fn suspend_silences_and_bad_windows_are_reported_not_silencing() {
        let mut spec: HeartbeatMonitorSpec = serde_json::from_value(serde_json::json!({
            "topic": "t", "intervalSeconds": 10, "brokerSecretRef": {"name": "k"},
            "maintenanceWindows": [
                {"schedule": "61 * * * *", "durationMinutes": 5},
                {"schedule": "* * * * *", "durationMinutes": 5, "timeZone": "Mars/Olympus"}
            ]
        }))
        .expect("spec");
        let (s, bad) = silence(&spec, at("2026-11-27T10:00:00Z"));
        assert_eq!(s, None);
        assert_eq!(bad.len(), 2);
        spec.suspend = true;
        assert_eq!(
            silence(&spec, at("2026-11-27T10:00:00Z")).0,
            Some(Silence::Suspended)
        );
    }

    #[test]
    fn an_every_minute_window_is_always_active() {
        let w = window("* * * * *", 5, "Europe/Berlin");
        assert!(
            active(&w, at("2026-11-27T10:00:30Z"))
                .expect("ok")
                .is_some()
        );
    }
}
