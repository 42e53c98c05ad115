//! A member's availability over a rolling window: the share of the time it
//! was observed in which it was beating on time. Derived from beat times
//! alone, so replaying the topic after a restart rebuilds it.

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};

/// Most down periods kept per member; beyond it the oldest two merge (the
/// figure stays an upper bound of downtime, memory stays bounded).
const MAX_GAPS: usize = 256;

/// Down periods of one member within the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// When observation began (the first beat or requirement seen).
    observed_from: Option<Timestamp>,
    /// Newest beat time recorded.
    last_beat: Option<Timestamp>,
    /// Closed down periods, oldest first.
    gaps: VecDeque<(Timestamp, Timestamp)>,
}

/// An [`Availability`] as a checkpoint keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AvailabilityRecord {
    pub observed_from: Option<Timestamp>,
    pub last_beat: Option<Timestamp>,
    pub gaps: Vec<(Timestamp, Timestamp)>,
}

impl Availability {
    /// What a checkpoint keeps.
    pub fn record(&self) -> AvailabilityRecord {
        AvailabilityRecord {
            observed_from: self.observed_from,
            last_beat: self.last_beat,
            gaps: self.gaps.iter().copied().collect(),
        }
    }

    /// Back from a checkpoint: at most [`MAX_GAPS`] gaps, in order, none
    /// after `now` (a checkpoint is input like any other).
    pub fn from_record(r: &AvailabilityRecord, now: Timestamp) -> Availability {
        let mut gaps: Vec<(Timestamp, Timestamp)> = r
            .gaps
            .iter()
            .copied()
            .filter(|(from, to)| from <= to && *to <= now)
            .collect();
        gaps.sort();
        let keep_from = gaps.len().saturating_sub(MAX_GAPS);
        Availability {
            observed_from: r.observed_from.filter(|t| *t <= now),
            last_beat: r.last_beat.filter(|t| *t <= now),
            gaps: gaps.split_off(keep_from).into(),
        }
    }

    /// Starts observing at `at` (for a member that has not beaten yet).
    pub fn observe_from(&mut self, at: Timestamp) {
        if self.observed_from.is_none() {
            self.observed_from = Some(at);
        }
    }

    /// Records a beat at `at`; a silence longer than `late_after` since the
    /// previous one was downtime. Beats older than the newest are ignored
    /// (a replay after a seek delivers them again).
    pub fn beat(&mut self, at: Timestamp, late_after: SignedDuration) {
        self.observe_from(at);
        let previous = self
            .last_beat
            .unwrap_or_else(|| self.observed_from.unwrap_or(at));
        if self.last_beat.is_some_and(|last| at <= last) {
            return;
        }
        if at.duration_since(previous) > late_after {
            // Checked: `late_after` is bounded, but no input may panic here.
            if let Ok(from) = previous.checked_add(late_after) {
                self.push_gap(from, at);
            }
        }
        self.last_beat = Some(at);
    }

    fn push_gap(&mut self, from: Timestamp, to: Timestamp) {
        self.gaps.push_back((from, to));
        if self.gaps.len() > MAX_GAPS
            && let (Some((a, _)), Some((_, d))) = (self.gaps.pop_front(), self.gaps.pop_front())
        {
            self.gaps.push_front((a, d));
        }
    }

    /// The share of `[now - window, now]` (or of the time since observation
    /// began, if later) the member was up, in 0..=1; `None` before any
    /// observation. Silence at the end longer than `late_after` counts as down.
    pub fn ratio(
        &mut self,
        now: Timestamp,
        window: SignedDuration,
        late_after: SignedDuration,
    ) -> Option<f64> {
        let observed_from = self.observed_from?;
        let start = observed_from.max(now.checked_sub(window).unwrap_or(observed_from));
        while self.gaps.front().is_some_and(|(_, to)| *to <= start) {
            self.gaps.pop_front();
        }
        let observed = now.duration_since(start).as_secs_f64();
        if observed <= 0.0 {
            return Some(1.0);
        }
        let clip = |from: Timestamp, to: Timestamp| {
            to.min(now)
                .duration_since(from.max(start))
                .as_secs_f64()
                .max(0.0)
        };
        let mut down: f64 = self.gaps.iter().map(|(f, t)| clip(*f, *t)).sum();
        let silent_from = self.last_beat.unwrap_or(observed_from);
        if now.duration_since(silent_from) > late_after
            && let Ok(from) = silent_from.checked_add(late_after)
        {
            down += clip(from, now);
        }
        Some((1.0 - down / observed).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }
    const LATE: SignedDuration = SignedDuration::from_secs(15);
    const DAY: SignedDuration = SignedDuration::from_hours(24);

    #[test]
    fn a_member_beating_on_time_is_fully_available() {
        let mut a = Availability::default();
        for i in 0..100 {
            a.beat(t(i * 10), LATE);
        }
        assert_eq!(a.ratio(t(995), DAY, LATE), Some(1.0));
    }

    #[test]
    fn a_gap_counts_as_down_from_the_late_deadline() {
        let mut a = Availability::default();
        a.beat(t(0), LATE);
        a.beat(t(115), LATE); // down 15..115
        a.beat(t(200), LATE); // down 130..200: 170 s of 200 in all
        let r = a.ratio(t(200), DAY, LATE).expect("observed");
        assert!((r - (1.0 - 170.0 / 200.0)).abs() < 1e-9, "{r}");
    }

    #[test]
    fn ongoing_silence_is_down_and_replayed_beats_change_nothing() {
        let mut a = Availability::default();
        a.beat(t(0), LATE);
        a.beat(t(10), LATE);
        a.beat(t(5), LATE); // a replay
        let r = a.ratio(t(125), DAY, LATE).expect("observed");
        assert!((r - (1.0 - 100.0 / 125.0)).abs() < 1e-9, "{r}");
    }

    #[test]
    fn only_the_window_counts() {
        let mut a = Availability::default();
        a.beat(t(0), LATE);
        a.beat(t(1000), LATE); // down 15..1000
        for i in 1..=100 {
            a.beat(t(1000 + i * 10), LATE);
        }
        let r = a.ratio(t(2000), SignedDuration::from_secs(500), LATE);
        assert_eq!(r, Some(1.0));
    }

    #[test]
    fn nothing_observed_has_no_ratio_and_gaps_stay_bounded() {
        let mut a = Availability::default();
        assert_eq!(a.ratio(t(0), DAY, LATE), None);
        for i in 0..2000 {
            a.beat(t(i * 100), LATE);
        }
        assert!(a.gaps.len() <= MAX_GAPS);
    }
}
