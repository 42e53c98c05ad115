//! What a consumer reports about itself, and what that means for one
//! monitor reading through it (its [`View`]). Pure.

use jiff::{SignedDuration, Timestamp};

use crate::membership::{Blind, View};

/// Why a consumer cannot read its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlindKind {
    /// The Secret's settings are unusable (librdkafka refused them).
    BadSettings,
    /// The broker cannot be reached, or refuses us (auth).
    Broker,
    /// The topic does not exist.
    TopicMissing,
}

/// A consumer's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Connecting, or reading back after a seek and not caught up yet.
    Starting,
    /// Reading, caught up with the seek of `caught_up_epoch`; nothing before
    /// `since` was read (the start of the seek, or the end of an outage);
    /// everything up to `until` has been.
    Reading {
        since: Timestamp,
        caught_up_epoch: u64,
        until: Timestamp,
    },
    /// Not reading: the error as the broker or librdkafka gave it.
    Blind { kind: BlindKind, why: String },
}

/// A consumer that has confirmed nothing newer than this is not reading:
/// it is stuck behind (or its fetches fail while metadata works).
pub const STALLED_AFTER: SignedDuration = SignedDuration::from_secs(20);

/// Whether a monitor attached at seek epoch `epoch` still waits for its
/// replay of the topic.
pub fn catching_up(health: &Health, epoch: u64) -> bool {
    match health {
        Health::Starting => true,
        Health::Reading {
            caught_up_epoch, ..
        } => *caught_up_epoch < epoch,
        Health::Blind { .. } => false,
    }
}

/// The view at `now` of a monitor attached at seek epoch `epoch`, which
/// replays its topic from `replayed_from`; `replay` says from what (a
/// checkpoint, or why none), for a person reading `Ready`.
pub fn view_for(
    health: &Health,
    epoch: u64,
    replayed_from: Timestamp,
    replay: &str,
    now: Timestamp,
) -> View {
    let catching_up = || {
        View::Blind(Blind::CatchingUp {
            from: replay.to_string(),
        })
    };
    match health {
        Health::Starting => catching_up(),
        Health::Reading {
            caught_up_epoch, ..
        } if *caught_up_epoch < epoch => catching_up(),
        Health::Reading { until, .. } if now.duration_since(*until) > STALLED_AFTER => {
            View::Blind(Blind::Stalled {
                behind_secs: now.duration_since(*until).as_secs(),
            })
        }
        Health::Reading { since, until, .. } => View::Sighted {
            since: (*since).max(replayed_from),
            until: *until,
        },
        Health::Blind { why, .. } => View::Blind(Blind::Unreadable { why: why.clone() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    #[test]
    fn a_monitor_sees_once_the_consumer_caught_up_with_its_seek() {
        let h = Health::Reading {
            since: t(0),
            caught_up_epoch: 1,
            until: t(9),
        };
        assert_eq!(
            view_for(&h, 1, t(-5), "", t(10)),
            View::Sighted {
                since: t(0),
                until: t(9)
            }
        );
        assert_eq!(
            view_for(&h, 1, t(5), "", t(10)),
            View::Sighted {
                since: t(5),
                until: t(9)
            }
        );
        assert!(matches!(view_for(&h, 2, t(5), "", t(10)), View::Blind(_)));
        // Epoch 2 waits for its replay; epoch 1 has it; an outage is not a replay.
        assert!(catching_up(&h, 2) && !catching_up(&h, 1));
        assert!(catching_up(&Health::Starting, 1));
        // Nothing confirmed for longer than the stall bound: not reading.
        let View::Blind(why) = view_for(&h, 1, t(5), "", t(30)) else {
            panic!("a stalled consumer is not sighted");
        };
        assert!(why.to_string().contains("21s"), "{why}");
        let blind = Health::Blind {
            kind: BlindKind::Broker,
            why: "all brokers down".into(),
        };
        assert!(!catching_up(&blind, 1));
        assert_eq!(
            view_for(&blind, 1, t(0), "", t(0)),
            View::Blind(Blind::Unreadable {
                why: "all brokers down".into()
            })
        );
    }
}
