//! The alert lifecycle over a detector's verdicts: at most one firing alert per detector, fired on
//! an anomalous edge and resolved on the first clean step after the minimum hold time.

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// Alert transition produced by [`Lifecycle::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fire,
    Resolve,
}

/// The alert a lifecycle is firing, or fired last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRef {
    /// Set by the caller with [`Lifecycle::set_id`] after a `Fire`; 0 until then.
    pub id: u64,
    /// Wall clock (unix ms) of the step that fired.
    pub raised_at: Millis,
}

/// Turns a detector's verdicts into at most one firing alert at a time.
///
/// Ids: the caller generates them. On `Some(Transition::Fire)` it calls
/// [`set_id`](Self::set_id); on `Some(Transition::Resolve)` it reads [`id`](Self::id) and
/// [`raised_at`](Self::raised_at), which still describe the alert that just resolved (they are
/// kept until the next `Fire`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    firing: bool,
    current: Option<AlertRef>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// `anomalous`: the detector verdict; `now`: wall clock ms; `hold_ms`: minimum time an alert
    /// stays firing. Fires on a not-firing → anomalous edge; resolves on the first
    /// non-anomalous step with `now >= raised_at + hold_ms`. Anomalous steps while firing, and
    /// non-anomalous steps within the hold time, change nothing.
    pub fn step(&mut self, anomalous: bool, now: Millis, hold_ms: Millis) -> Option<Transition> {
        if !self.firing {
            if anomalous {
                self.firing = true;
                self.current = Some(AlertRef {
                    id: 0,
                    raised_at: now,
                });
                return Some(Transition::Fire);
            }
            return None;
        }
        if anomalous {
            return None;
        }
        let raised_at = self.current.map_or(now, |c| c.raised_at);
        if now >= raised_at.saturating_add(hold_ms.max(0)) {
            self.firing = false;
            return Some(Transition::Resolve);
        }
        None
    }

    /// Attaches the caller's id to the current alert (no-op when nothing has fired yet).
    pub fn set_id(&mut self, id: u64) {
        if let Some(c) = &mut self.current {
            c.id = id;
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Id of the firing alert, or of the one that resolved last; `None` before the first fire.
    pub fn id(&self) -> Option<u64> {
        self.current.map(|c| c.id)
    }

    /// When the firing alert (or the one that resolved last) was raised; `None` before the
    /// first fire.
    pub fn raised_at(&self) -> Option<Millis> {
        self.current.map(|c| c.raised_at)
    }

    #[cfg(test)]
    pub fn current(&self) -> Option<AlertRef> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_hold_time() {
        let mut lc = Lifecycle::new();
        assert!(!lc.is_firing());
        assert_eq!(lc.raised_at(), None);
        assert_eq!(lc.id(), None);
        assert_eq!(lc.step(false, 0, 10_000), None);
        assert_eq!(lc.step(true, 1_000, 10_000), Some(Transition::Fire));
        lc.set_id(42);
        assert!(lc.is_firing());
        assert_eq!(lc.raised_at(), Some(1_000));
        assert_eq!(lc.id(), Some(42));
        assert_eq!(lc.step(true, 2_000, 10_000), None); // no second Fire
        assert_eq!(lc.step(false, 5_000, 10_000), None); // within hold
        assert_eq!(lc.step(true, 9_000, 10_000), None);
        assert_eq!(lc.step(false, 11_000, 10_000), Some(Transition::Resolve)); // at raised_at + hold
        assert!(!lc.is_firing());
        // The resolved alert is still readable for the Resolve message.
        assert_eq!(lc.id(), Some(42));
        assert_eq!(lc.raised_at(), Some(1_000));
        assert_eq!(lc.step(false, 12_000, 10_000), None);
        assert_eq!(lc.step(true, 13_000, 10_000), Some(Transition::Fire));
        assert_eq!(lc.id(), Some(0));
        lc.set_id(43);
        assert_eq!(
            lc.current(),
            Some(AlertRef {
                id: 43,
                raised_at: 13_000
            })
        );
        // Anomalous past the hold: stays firing until a clean step.
        assert_eq!(lc.step(true, 50_000, 10_000), None);
        assert_eq!(lc.step(false, 50_001, 10_000), Some(Transition::Resolve));
        // Zero hold resolves on the very next clean step.
        assert_eq!(lc.step(true, 60_000, 0), Some(Transition::Fire));
        assert_eq!(lc.step(false, 60_000, 0), Some(Transition::Resolve));
        let mut fresh = Lifecycle::new();
        fresh.set_id(7); // nothing fired: no-op
        assert_eq!(fresh.id(), None);
    }
}
