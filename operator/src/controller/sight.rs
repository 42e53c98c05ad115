//! What the controller can see of the keys a monitor needs to be read:
//! its broker Secret (the consumer key) and, with signing on, the signing
//! master. A transient API error is no sight at all: it is the crate's
//! `Error`, counted and backed off by the controller's error policy.

/// A key as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySight<T> {
    /// There and usable.
    Seen(T),
    /// Missing, forbidden or unusable: a reason not to read the topic, as
    /// `Ready` says it (a `heartbeat_crds::conditions::reason`) with what
    /// to do about it.
    Unseen {
        reason: &'static str,
        message: String,
    },
}

impl<T> KeySight<T> {
    /// The key `f` makes of a seen one; an unseen one stays so.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> KeySight<U>) -> KeySight<U> {
        match self {
            KeySight::Seen(k) => f(k),
            KeySight::Unseen { reason, message } => KeySight::Unseen { reason, message },
        }
    }

    /// `f` of a seen key; an unseen one stays so.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> KeySight<U> {
        self.and_then(|k| KeySight::Seen(f(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: an unseen key keeps its reason and message through the steps
    /// that would have used it (signing after the broker Secret).
    #[test]
    fn an_unseen_key_stays_unseen_with_its_reason_through_later_steps() {
        let unseen: KeySight<u8> = KeySight::Unseen {
            reason: "R",
            message: "m".into(),
        };
        let later = unseen.and_then(|k| KeySight::Seen(k + 1));
        assert_eq!(
            later,
            KeySight::Unseen {
                reason: "R",
                message: "m".into()
            }
        );
        assert_eq!(KeySight::Seen(1).map(|k| k + 1), KeySight::Seen(2));
    }
}
