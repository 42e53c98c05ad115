//! When a topic's replay has caught up, and up to when the topic is
//! confirmed read: the next offset to read per partition, measured against
//! the high watermarks each periodic check sees, and whether sight of the
//! topic has been continuous since. Pure: offsets, watermarks and times
//! come in, decisions go out; the read loop in [`super::task`] does the
//! Kafka calls and reports what is decided here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;

/// How often each monitor's table is checkpointed once caught up: what a
/// new leader replays at most.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// What outlives one session: since when the topic has been read without
/// a gap, and whether a gap (blindness) happened since.
#[derive(Debug, Default)]
pub(super) struct Sight {
    since: Option<Timestamp>,
    blind: bool,
}

impl Sight {
    /// Sight is lost (a session ended, a watermark request failed).
    pub(super) fn blind(&self) -> bool {
        self.blind
    }

    /// Sight of the topic is lost; returns whether it was had until now
    /// (so the loss is logged once).
    pub(super) fn lose(&mut self) -> bool {
        !std::mem::replace(&mut self.blind, true)
    }

    /// The topic is confirmed read, at `checked`, by a seek that replayed
    /// from `target`: sight is back if it was lost. Returns since when it
    /// has been continuous, and whether it had been lost.
    pub(super) fn confirm(&mut self, target: Timestamp, checked: Timestamp) -> (Timestamp, bool) {
        let since = match self.since {
            Some(s) if !self.blind => s,
            // Back after a gap: nothing before now was seen.
            Some(_) => checked,
            None if self.blind => checked,
            None => target,
        };
        let regained = self.blind;
        self.since = Some(since);
        self.blind = false;
        (since, regained)
    }
}

/// Everything up to `until` has been read, as confirmed at `checked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Confirmed {
    pub until: Timestamp,
    pub checked: Timestamp,
}

/// A check's high watermarks the consumer has not passed yet, and when
/// they were seen.
#[derive(Debug)]
struct Pending {
    at: Timestamp,
    highs: HashMap<i32, i64>,
}

/// One session's reading of the topic: the seek it reads for, where it is
/// in each partition, and the seek it last caught up with.
#[derive(Debug)]
pub(super) struct CatchUp {
    epoch: u64,
    next: HashMap<i32, i64>,
    /// The oldest check whose high watermarks are not passed yet.
    pending: Option<Pending>,
    caught_up: Option<u64>,
    last_checkpoint: Instant,
}

impl CatchUp {
    /// A session starting at `now`: no seek read yet, and the first
    /// checkpoint no sooner than [`CHECKPOINT_EVERY`] from now.
    pub(super) fn new(now: Instant) -> CatchUp {
        CatchUp {
            epoch: 0,
            next: HashMap::new(),
            pending: None,
            caught_up: None,
            last_checkpoint: now,
        }
    }

    /// A seek of `epoch` put the partitions at `next`: what an earlier
    /// seek's checks saw says nothing about this one's; the seek caught up
    /// with last stays until this one catches up.
    pub(super) fn seek(&mut self, epoch: u64, next: HashMap<i32, i64>) {
        self.epoch = epoch;
        self.next = next;
        self.pending = None;
    }

    /// The seek epoch the consumer has caught up with, if any.
    pub(super) fn caught_up(&self) -> Option<u64> {
        self.caught_up
    }

    /// The next offset to read per partition.
    pub(super) fn next(&self) -> &HashMap<i32, i64> {
        &self.next
    }

    /// A message at `offset` of `partition` was read (the broker's word:
    /// saturating, never overflowing).
    pub(super) fn message(&mut self, partition: i32, offset: i64) {
        self.next.insert(partition, offset.saturating_add(1));
    }

    /// The consumer's own positions, which pass transaction markers and
    /// compacted gaps that no message shows; never moves a partition back.
    pub(super) fn positions(&mut self, positions: impl IntoIterator<Item = (i32, i64)>) {
        for (p, o) in positions {
            let n = self.next.entry(p).or_insert(o);
            *n = (*n).max(o);
        }
    }

    /// After a batch of messages: the pending check is confirmed the
    /// moment its watermarks are passed, not at the next check (silence is
    /// judged only up to here, so this is how soon a passed deadline can
    /// be called Stale). Not while sight is lost: only a check brings it
    /// back.
    pub(super) fn after_messages(&mut self, sight: &Sight) -> Option<Confirmed> {
        if sight.blind() {
            return None;
        }
        let at = self.pending.as_ref().filter(|c| self.passed(&c.highs))?.at;
        self.pending = None;
        self.caught_up = Some(self.epoch);
        Some(Confirmed {
            until: at,
            checked: at,
        })
    }

    /// How many messages are left to read up to `highs` (a partition past
    /// its watermark counts none); saturating, as the watermarks are the
    /// broker's word.
    pub(super) fn lag(&self, highs: &HashMap<i32, i64>) -> i64 {
        highs
            .iter()
            .map(|(p, high)| high.saturating_sub(self.offset(*p)).max(0))
            .fold(0, i64::saturating_add)
    }

    /// A check saw the high watermarks `highs` at `at`: confirms the
    /// pending check if it is passed, or this one if its own watermarks
    /// are; a check not passed becomes the pending one unless an older one
    /// still is.
    pub(super) fn watermarks(
        &mut self,
        highs: HashMap<i32, i64>,
        at: Timestamp,
    ) -> Option<Confirmed> {
        let mut until = None;
        if let Some(pending) = &self.pending
            && self.passed(&pending.highs)
        {
            until = Some(pending.at);
            self.pending = None;
        }
        if self.passed(&highs) {
            until = Some(at);
            self.pending = None;
        } else if self.pending.is_none() {
            self.pending = Some(Pending { at, highs });
        }
        let until = until?;
        self.caught_up = Some(self.epoch);
        Some(Confirmed { until, checked: at })
    }

    /// Whether checkpoints are due at `now`: caught up with the current
    /// seek, in sight, and [`CHECKPOINT_EVERY`] since the last ones.
    pub(super) fn checkpoint_due(&self, sight: &Sight, now: Instant) -> bool {
        self.caught_up == Some(self.epoch)
            && !sight.blind()
            && now.saturating_duration_since(self.last_checkpoint) >= CHECKPOINT_EVERY
    }

    /// Checkpoints were handed to the writer at `now`.
    pub(super) fn checkpointed(&mut self, now: Instant) {
        self.last_checkpoint = now;
    }

    /// Everything produced before a check is read once the next offsets
    /// pass the high watermarks it saw; a partition not read yet is at 0.
    fn passed(&self, highs: &HashMap<i32, i64>) -> bool {
        highs.iter().all(|(p, h)| self.offset(*p) >= *h)
    }

    fn offset(&self, partition: i32) -> i64 {
        self.next.get(&partition).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn offsets(of: &[(i32, i64)]) -> HashMap<i32, i64> {
        of.iter().copied().collect()
    }

    /// A session reading the seek of epoch 1 from `next`.
    fn reading(next: &[(i32, i64)]) -> CatchUp {
        let mut c = CatchUp::new(Instant::now());
        c.seek(1, offsets(next));
        c
    }

    fn confirmed(until: i64, checked: i64) -> Option<Confirmed> {
        Some(Confirmed {
            until: t(until),
            checked: t(checked),
        })
    }

    #[test]
    fn a_check_is_confirmed_at_once_when_every_partition_has_reached_its_watermark() {
        let mut c = reading(&[(0, 10), (1, 5)]);
        assert_eq!(c.caught_up(), None);
        assert_eq!(
            c.watermarks(offsets(&[(0, 10), (1, 5)]), t(100)),
            confirmed(100, 100)
        );
        assert_eq!(c.caught_up(), Some(1));
    }

    #[test]
    fn one_partition_short_of_its_watermark_holds_the_check_pending() {
        let mut c = reading(&[(0, 10), (1, 4)]);
        assert_eq!(c.watermarks(offsets(&[(0, 10), (1, 5)]), t(100)), None);
        assert_eq!(c.caught_up(), None);
    }

    #[test]
    fn an_empty_partition_counts_as_caught_up() {
        // Nothing read from partition 1 (not even a position): at 0.
        let mut c = reading(&[(0, 10)]);
        assert_eq!(
            c.watermarks(offsets(&[(0, 10), (1, 0)]), t(100)),
            confirmed(100, 100)
        );
    }

    #[test]
    fn a_partition_read_past_its_watermark_counts_as_caught_up() {
        let mut c = reading(&[(0, 12)]);
        assert_eq!(
            c.watermarks(offsets(&[(0, 10)]), t(100)),
            confirmed(100, 100)
        );
    }

    #[test]
    fn a_message_moves_its_partition_to_the_offset_after_it() {
        let mut c = reading(&[(0, 0)]);
        c.message(0, 9);
        assert_eq!(c.next(), &offsets(&[(0, 10)]));
        assert_eq!(
            c.watermarks(offsets(&[(0, 10)]), t(100)),
            confirmed(100, 100)
        );
    }

    #[test]
    fn messages_passing_the_pending_watermarks_confirm_that_check_without_waiting_for_the_next() {
        let mut c = reading(&[(0, 0)]);
        assert_eq!(c.watermarks(offsets(&[(0, 10)]), t(100)), None);
        c.message(0, 8);
        assert_eq!(c.after_messages(&Sight::default()), None);
        c.message(0, 9);
        assert_eq!(c.after_messages(&Sight::default()), confirmed(100, 100));
        assert_eq!(c.caught_up(), Some(1));
        // Confirmed once: the check is no longer pending.
        assert_eq!(c.after_messages(&Sight::default()), None);
    }

    #[test]
    fn messages_confirm_nothing_while_sight_is_lost_and_the_next_check_does() {
        let mut c = reading(&[(0, 0)]);
        assert_eq!(c.watermarks(offsets(&[(0, 10)]), t(100)), None);
        let mut sight = Sight::default();
        sight.lose();
        c.message(0, 9);
        assert_eq!(c.after_messages(&sight), None);
        assert_eq!(c.caught_up(), None);
        assert_eq!(
            c.watermarks(offsets(&[(0, 10)]), t(101)),
            confirmed(101, 101)
        );
    }

    #[test]
    fn the_oldest_check_not_passed_stays_pending_while_later_ones_are_not_passed() {
        let mut c = reading(&[(0, 0)]);
        assert_eq!(c.watermarks(offsets(&[(0, 10)]), t(100)), None);
        assert_eq!(c.watermarks(offsets(&[(0, 20)]), t(101)), None);
        c.message(0, 14);
        assert_eq!(c.after_messages(&Sight::default()), confirmed(100, 100));
    }

    #[test]
    fn a_check_not_passed_itself_confirms_the_pending_one_passed_and_becomes_pending() {
        let mut c = reading(&[(0, 0)]);
        assert_eq!(c.watermarks(offsets(&[(0, 10)]), t(100)), None);
        c.message(0, 14);
        // Sight lost meanwhile: the messages alone confirmed nothing.
        let mut sight = Sight::default();
        sight.lose();
        assert_eq!(c.after_messages(&sight), None);
        assert_eq!(
            c.watermarks(offsets(&[(0, 20)]), t(101)),
            confirmed(100, 101)
        );
        assert_eq!(c.caught_up(), Some(1));
        c.message(0, 19);
        assert_eq!(c.after_messages(&Sight::default()), confirmed(101, 101));
    }

    #[test]
    fn a_check_passed_itself_confirms_up_to_its_own_time() {
        let mut c = reading(&[(0, 0)]);
        assert_eq!(c.watermarks(offsets(&[(0, 10)]), t(100)), None);
        c.positions([(0, 10)]);
        assert_eq!(
            c.watermarks(offsets(&[(0, 10)]), t(101)),
            confirmed(101, 101)
        );
        assert_eq!(c.after_messages(&Sight::default()), None);
    }

    #[test]
    fn a_check_passed_itself_drops_an_older_pending_one_so_until_never_moves_back() {
        let mut c = reading(&[(0, 0)]);
        assert_eq!(c.watermarks(offsets(&[(0, 10)]), t(100)), None);
        // The topic was made again: its end is now lower.
        c.message(0, 4);
        assert_eq!(
            c.watermarks(offsets(&[(0, 5)]), t(101)),
            confirmed(101, 101)
        );
        c.message(0, 9);
        assert_eq!(c.after_messages(&Sight::default()), None);
    }

    #[test]
    fn positions_move_a_partition_forward_but_never_back() {
        // Past a transaction marker no message shows.
        let mut c = reading(&[(0, 9), (1, 5)]);
        c.positions([(0, 10), (1, 3), (2, 7)]);
        assert_eq!(c.next(), &offsets(&[(0, 10), (1, 5), (2, 7)]));
    }

    #[test]
    fn a_new_seek_drops_the_pending_check_and_keeps_the_epoch_last_caught_up_with() {
        let mut c = reading(&[(0, 10)]);
        assert_eq!(
            c.watermarks(offsets(&[(0, 10)]), t(100)),
            confirmed(100, 100)
        );
        assert_eq!(c.watermarks(offsets(&[(0, 20)]), t(101)), None);
        c.seek(2, offsets(&[(0, 20)]));
        assert_eq!(c.next(), &offsets(&[(0, 20)]));
        // The first seek's pending check is passed, but is not this seek's.
        assert_eq!(c.after_messages(&Sight::default()), None);
        assert_eq!(c.caught_up(), Some(1));
        assert_eq!(
            c.watermarks(offsets(&[(0, 20)]), t(102)),
            confirmed(102, 102)
        );
        assert_eq!(c.caught_up(), Some(2));
    }

    #[test]
    fn lag_counts_what_each_partition_has_left_and_nothing_for_one_past_its_watermark() {
        let c = reading(&[(0, 4), (1, 30)]);
        assert_eq!(c.lag(&offsets(&[(0, 10), (1, 20), (2, 3)])), 6 + 3);
    }

    #[test]
    fn a_message_at_the_largest_offset_leaves_its_partition_there_instead_of_overflowing() {
        let mut c = reading(&[(0, 0)]);
        c.message(0, i64::MAX);
        assert_eq!(c.next(), &offsets(&[(0, i64::MAX)]));
    }

    #[test]
    fn lag_saturates_instead_of_overflowing_on_huge_watermarks() {
        let c = reading(&[(0, -1)]);
        assert_eq!(c.lag(&offsets(&[(0, i64::MAX)])), i64::MAX);
        let c = reading(&[]);
        assert_eq!(c.lag(&offsets(&[(0, i64::MAX), (1, i64::MAX)])), i64::MAX);
    }

    #[test]
    fn checkpoints_are_due_every_interval_once_caught_up_with_the_current_seek_and_in_sight() {
        let start = Instant::now();
        let later = start + CHECKPOINT_EVERY;
        let mut c = CatchUp::new(start);
        c.seek(1, offsets(&[(0, 10)]));
        let sight = Sight::default();
        // Not caught up yet.
        assert!(!c.checkpoint_due(&sight, later));
        c.watermarks(offsets(&[(0, 10)]), t(100));
        assert!(c.checkpoint_due(&sight, later));
        // Not before the interval, counted from the last checkpoint.
        assert!(!c.checkpoint_due(&sight, later - Duration::from_millis(1)));
        c.checkpointed(later);
        assert!(!c.checkpoint_due(&sight, later + Duration::from_secs(9)));
        assert!(c.checkpoint_due(&sight, later + CHECKPOINT_EVERY));
    }

    #[test]
    fn no_checkpoint_is_due_while_sight_is_lost() {
        let start = Instant::now();
        let mut c = CatchUp::new(start);
        c.seek(1, offsets(&[(0, 10)]));
        c.watermarks(offsets(&[(0, 10)]), t(100));
        let mut sight = Sight::default();
        sight.lose();
        assert!(!c.checkpoint_due(&sight, start + CHECKPOINT_EVERY));
    }

    #[test]
    fn no_checkpoint_is_due_until_a_new_seek_has_caught_up() {
        let start = Instant::now();
        let mut c = CatchUp::new(start);
        c.seek(1, offsets(&[(0, 10)]));
        c.watermarks(offsets(&[(0, 10)]), t(100));
        // A monitor attached: its table is not replayed yet.
        c.seek(2, offsets(&[(0, 0)]));
        assert!(!c.checkpoint_due(&Sight::default(), start + CHECKPOINT_EVERY));
    }

    #[test]
    fn the_first_confirmation_has_seen_the_topic_since_the_seek_target() {
        let mut sight = Sight::default();
        assert_eq!(sight.confirm(t(10), t(100)), (t(10), false));
        assert!(!sight.blind());
    }

    #[test]
    fn in_sight_a_later_confirmation_keeps_the_since_it_had() {
        let mut sight = Sight::default();
        sight.confirm(t(10), t(100));
        // A later seek's target does not move it either.
        assert_eq!(sight.confirm(t(50), t(200)), (t(10), false));
    }

    #[test]
    fn after_a_gap_sight_starts_at_the_check_that_confirmed() {
        let mut sight = Sight::default();
        sight.confirm(t(10), t(100));
        assert!(sight.lose());
        assert_eq!(sight.confirm(t(10), t(200)), (t(200), true));
        assert!(!sight.blind());
    }

    #[test]
    fn blind_before_the_first_confirmation_sight_starts_at_the_check_that_confirmed() {
        let mut sight = Sight::default();
        sight.lose();
        assert_eq!(sight.confirm(t(10), t(200)), (t(200), true));
    }

    #[test]
    fn sight_lost_is_reported_lost_once() {
        let mut sight = Sight::default();
        assert!(sight.lose());
        assert!(!sight.lose());
        assert!(sight.blind());
    }
}
