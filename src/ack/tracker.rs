//! Ordered acknowledgement tracking for one partition.
//!
//! Batches of a partition are registered in offset order when they are handed to the pipeline
//! and may resolve in any order. The tracker only ever releases the *contiguous prefix* of
//! delivered batches: the committable position never passes a batch that is still in flight or
//! that failed. A failed batch blocks the partition for good (until the pipeline restarts and the
//! records are redelivered), which is exactly the at-least-once invariant.

use std::collections::BTreeMap;

use super::AckStatus;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Last offset the batch covers (inclusive).
    last: i64,
    /// `None` while in flight.
    status: Option<AckStatus>,
}

/// Tracks in-flight batches of one partition and yields the next offset that may be committed.
#[derive(Debug, Default)]
pub(crate) struct PartitionTracker {
    /// Registered, not yet released batches keyed by their first offset.
    entries: BTreeMap<i64, Entry>,
    /// The next offset to commit (one past the last released record), once anything is released.
    committable: Option<i64>,
    /// Set when the batch at the head of the queue failed: nothing after it may be committed.
    blocked_at: Option<i64>,
}

impl PartitionTracker {
    /// An empty tracker.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers a batch covering `first..=last`. Batches must be registered in increasing
    /// offset order (gaps are fine: compaction and transaction markers skip offsets).
    pub(crate) fn register(&mut self, first: i64, last: i64) {
        debug_assert!(first <= last);
        debug_assert!(
            self.entries
                .last_key_value()
                .is_none_or(|(_, e)| e.last < first),
            "batches must be registered in offset order"
        );
        self.entries.insert(first, Entry { last, status: None });
    }

    /// Records the final status of the batch that starts at `first`. Returns the new committable
    /// offset when the contiguous delivered prefix advanced.
    pub(crate) fn resolve(&mut self, first: i64, status: AckStatus) -> Option<i64> {
        let entry = self.entries.get_mut(&first)?;
        entry.status = Some(status);
        let before = self.committable;
        while let Some(head) = self.entries.first_entry() {
            match head.get().status {
                Some(AckStatus::Delivered) => {
                    self.committable = Some(head.get().last + 1);
                    head.remove();
                }
                Some(_) => {
                    self.blocked_at = Some(*head.key());
                    break;
                }
                None => break,
            }
        }
        (self.committable != before)
            .then_some(self.committable)
            .flatten()
    }

    /// The next offset that may be committed, if any batch was released.
    pub(crate) fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// Number of registered batches not yet released (in flight, or stuck behind a failure).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.entries.len()
    }

    /// First offset of a failed batch that blocks this partition, if any.
    #[cfg(test)]
    pub(crate) fn blocked_at(&self) -> Option<i64> {
        self.blocked_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn releases_only_contiguous_prefix() {
        let mut t = PartitionTracker::new();
        t.register(0, 9);
        t.register(10, 19);
        t.register(25, 30);
        assert_eq!(t.resolve(10, AckStatus::Delivered), None);
        assert_eq!(t.resolve(0, AckStatus::Delivered), Some(20));
        assert_eq!(t.resolve(25, AckStatus::Delivered), Some(31));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn failure_blocks_everything_after_it() {
        let mut t = PartitionTracker::new();
        t.register(0, 4);
        t.register(5, 9);
        t.register(10, 14);
        assert_eq!(t.resolve(5, AckStatus::Errored), None);
        assert_eq!(t.resolve(0, AckStatus::Delivered), Some(5));
        assert_eq!(t.resolve(10, AckStatus::Delivered), None);
        assert_eq!(t.committable(), Some(5));
        assert_eq!(t.blocked_at(), Some(5));
    }

    fn batches() -> impl Strategy<Value = (Vec<(i64, i64, AckStatus)>, Vec<usize>)> {
        let status = prop_oneof![
            8 => Just(AckStatus::Delivered),
            1 => Just(AckStatus::Errored),
            1 => Just(AckStatus::Rejected),
        ];
        prop::collection::vec((1i64..20, 0i64..3, status), 1..40).prop_flat_map(|specs| {
            let mut next = 0;
            let batches: Vec<_> = specs
                .into_iter()
                .map(|(len, gap, status)| {
                    let first = next + gap;
                    next = first + len;
                    (first, first + len - 1, status)
                })
                .collect();
            let order: Vec<usize> = (0..batches.len()).collect();
            (Just(batches), Just(order).prop_shuffle())
        })
    }

    proptest! {
        /// Whatever order receipts resolve in, the committable offset never passes a record
        /// that is unresolved or failed, and with no failure it reaches the end.
        #[test]
        fn committed_offset_never_passes_unresolved_or_failed((batches, order) in batches()) {
            let mut t = PartitionTracker::new();
            for &(first, last, _) in &batches {
                t.register(first, last);
            }
            let mut resolved = vec![false; batches.len()];
            for &i in &order {
                let (first, _, status) = batches[i];
                t.resolve(first, status);
                resolved[i] = true;
                if let Some(c) = t.committable() {
                    for (j, &(first, _, status)) in batches.iter().enumerate() {
                        if !resolved[j] || status != AckStatus::Delivered {
                            prop_assert!(c <= first, "committable {c} passed batch at {first}");
                        }
                    }
                }
            }
            let first_failure = batches.iter().find(|b| b.2 != AckStatus::Delivered);
            match first_failure {
                None => prop_assert_eq!(t.committable(), Some(batches.last().unwrap().1 + 1)),
                Some(&(first, _, _)) => {
                    prop_assert_eq!(t.blocked_at(), Some(first));
                    let expected = batches.iter().take_while(|b| b.0 < first).last().map(|b| b.1 + 1);
                    prop_assert_eq!(t.committable(), expected);
                }
            }
        }
    }
}
