//! Delivery receipts.
//!
//! A source hands every batch it reads to the pipeline together with an [`Ack`]. The ack is a
//! cheap clone (one `Arc`); every fragment of the batch that travels on (an output message, a
//! dead-letter record) carries a clone. When the last clone drops, the ack reports the *worst*
//! status any fragment recorded to the source's [`AckReceiver`], which then decides whether the
//! source position may be committed.
//!
//! Sinks never hold a bare [`Ack`]: they hold a [`PendingReceipt`], which counts as
//! [`AckStatus::Errored`] if it is dropped without being resolved (panic, cancellation, bug), so
//! nothing is ever committed by accident.

pub(crate) mod tracker;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Outcome of one fragment of a batch. Ordered from best to worst; a batch's status is the
/// maximum over its fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum AckStatus {
    /// Reached every output it was routed to, was intentionally filtered, or was durably
    /// dead-lettered.
    Delivered = 0,
    /// Failed in a way that may succeed on redelivery (broker unavailable, timeout).
    Errored = 1,
    /// Failed permanently and the pipeline policy does not accept the loss (`on_error: fail`).
    Rejected = 2,
}

impl AckStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => AckStatus::Delivered,
            1 => AckStatus::Errored,
            _ => AckStatus::Rejected,
        }
    }

    /// Whether the source may commit past the positions this status covers.
    pub fn is_committable(self) -> bool {
        self == AckStatus::Delivered
    }
}

/// Receives the final status of an ack, exactly once, when its last clone drops.
pub trait AckReceiver: Send + Sync {
    /// `token` is the value the source chose when it created the ack (for Kafka: an index into
    /// its per-partition tracker).
    fn resolved(&self, token: u64, status: AckStatus);

    /// Like [`AckReceiver::resolved`], with the indices (in the batch) of the records that were
    /// dead-lettered, for sources that settle each message on its own (JetStream terminates
    /// them rather than acking). The default ignores them.
    fn resolved_with_dead_letters(&self, token: u64, status: AckStatus, dead_lettered: Vec<u32>) {
        let _ = dead_lettered;
        self.resolved(token, status);
    }

    /// Like [`AckReceiver::resolved_with_dead_letters`], also telling whether a fragment was
    /// refused for good as too large (a broker whose topic limit is below the producer's),
    /// for receivers that can answer with a smaller message. The default ignores it.
    fn resolved_in_full(
        &self,
        token: u64,
        status: AckStatus,
        dead_lettered: Vec<u32>,
        refused_too_large: bool,
    ) {
        let _ = refused_too_large;
        self.resolved_with_dead_letters(token, status, dead_lettered);
    }
}

struct AckInner {
    status: AtomicU8,
    token: u64,
    receiver: Option<Arc<dyn AckReceiver>>,
    /// Records of the batch that were durably dead-lettered (usually none: no allocation).
    dead_lettered: Mutex<Vec<u32>>,
    /// Whether a fragment was refused as too large (see [`PendingReceipt::refused_too_large`]).
    refused_too_large: AtomicBool,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        if let Some(receiver) = &self.receiver {
            let dead_lettered = match self.dead_lettered.get_mut() {
                Ok(v) => std::mem::take(v),
                Err(poisoned) => std::mem::take(poisoned.into_inner()),
            };
            receiver.resolved_in_full(
                self.token,
                AckStatus::from_u8(self.status.load(Ordering::Acquire)),
                dead_lettered,
                self.refused_too_large.load(Ordering::Acquire),
            );
        }
    }
}

/// A shared receipt for one source batch. Clone it for every fragment; the status reported is
/// the worst recorded by any clone.
#[derive(Clone)]
pub struct Ack(Arc<AckInner>);

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("token", &self.0.token)
            .field("status", &self.status())
            .finish()
    }
}

impl Ack {
    /// Creates an ack that reports to `receiver` with `token` when its last clone drops.
    pub fn new(token: u64, receiver: Arc<dyn AckReceiver>) -> Self {
        Ack(Arc::new(AckInner {
            status: AtomicU8::new(AckStatus::Delivered as u8),
            token,
            receiver: Some(receiver),
            dead_lettered: Mutex::new(Vec::new()),
            refused_too_large: AtomicBool::new(false),
        }))
    }

    /// Records an outcome; the ack keeps the worst one seen.
    pub fn record(&self, status: AckStatus) {
        // Delivered is the initial and best status: recording it changes nothing, and skipping
        // the write keeps the shared counter's cache line quiet (one call per produced message).
        // The final read happens after the last clone drops, which orders it after every write.
        if status != AckStatus::Delivered {
            self.0.status.fetch_max(status as u8, Ordering::AcqRel);
        }
    }

    /// Notes that the batch's record `index` was durably dead-lettered.
    pub fn note_dead_lettered(&self, indices: impl IntoIterator<Item = usize>) {
        let mut list = match self.0.dead_lettered.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        list.extend(indices.into_iter().map(|i| i as u32));
    }

    /// The worst status recorded so far.
    pub fn status(&self) -> AckStatus {
        AckStatus::from_u8(self.0.status.load(Ordering::Acquire))
    }

    /// A fail-safe receipt for one fragment of this batch.
    pub fn receipt(&self) -> PendingReceipt {
        PendingReceipt {
            ack: Some(self.clone()),
        }
    }
}

/// One fragment's receipt. Resolve it with [`PendingReceipt::resolve`]; dropping it unresolved
/// records [`AckStatus::Errored`].
#[derive(Debug)]
#[must_use = "dropping a receipt unresolved marks the batch as errored"]
pub struct PendingReceipt {
    ack: Option<Ack>,
}

impl PendingReceipt {
    /// Resolves the fragment with `status`.
    pub fn resolve(mut self, status: AckStatus) {
        if let Some(ack) = self.ack.take() {
            ack.record(status);
        }
    }

    /// Resolves the fragment as errored because its destination refused it for good as too
    /// large; the ack's receiver learns that too ([`AckReceiver::resolved_in_full`]).
    pub fn refused_too_large(mut self) {
        if let Some(ack) = self.ack.take() {
            ack.0.refused_too_large.store(true, Ordering::Release);
            ack.record(AckStatus::Errored);
        }
    }

    /// Shorthand for `resolve(AckStatus::Delivered)`.
    pub fn delivered(self) {
        self.resolve(AckStatus::Delivered)
    }

    /// The receipt as one pointer, for a C library to hold (a Kafka message's opaque) without
    /// an allocation of its own. Get it back with [`PendingReceipt::from_raw`] exactly once.
    pub fn into_raw(mut self) -> *mut std::ffi::c_void {
        match self.ack.take() {
            Some(ack) => Arc::into_raw(ack.0).cast_mut().cast(),
            None => std::ptr::null_mut(),
        }
    }

    /// The receipt [`PendingReceipt::into_raw`] gave out.
    ///
    /// # Safety
    /// `ptr` must come from `into_raw` and must not be used again.
    pub unsafe fn from_raw(ptr: *mut std::ffi::c_void) -> Self {
        let ack = (!ptr.is_null()).then(|| {
            // SAFETY: the caller passes a pointer from `Arc::into_raw` in `into_raw`, once.
            Ack(unsafe { Arc::from_raw(ptr.cast_const().cast::<AckInner>()) })
        });
        PendingReceipt { ack }
    }

    /// The ack this receipt belongs to (to derive further receipts for sub-fragments).
    pub fn ack(&self) -> &Ack {
        self.ack
            .as_ref()
            .expect("receipt is only taken by resolve, which consumes it")
    }
}

impl Drop for PendingReceipt {
    fn drop(&mut self) {
        if let Some(ack) = self.ack.take() {
            ack.record(AckStatus::Errored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, AckStatus)>>);
    impl AckReceiver for Recorder {
        fn resolved(&self, token: u64, status: AckStatus) {
            self.0.lock().unwrap().push((token, status));
        }
    }

    #[test]
    fn reports_once_when_last_clone_drops_with_worst_status() {
        let rec = Arc::new(Recorder::default());
        let ack = Ack::new(7, rec.clone());
        let a = ack.receipt();
        let b = ack.receipt();
        drop(ack);
        a.delivered();
        assert!(rec.0.lock().unwrap().is_empty());
        b.resolve(AckStatus::Rejected);
        assert_eq!(*rec.0.lock().unwrap(), vec![(7, AckStatus::Rejected)]);
    }

    #[test]
    fn dropped_receipt_counts_as_errored() {
        let rec = Arc::new(Recorder::default());
        let ack = Ack::new(1, rec.clone());
        let r = ack.receipt();
        drop(ack);
        drop(r);
        assert_eq!(*rec.0.lock().unwrap(), vec![(1, AckStatus::Errored)]);
    }

    #[test]
    fn a_receipt_survives_the_round_trip_through_a_raw_pointer() {
        let rec = Arc::new(Recorder::default());
        let ack = Ack::new(5, rec.clone());
        let raw = ack.receipt().into_raw();
        drop(ack);
        assert!(
            rec.0.lock().unwrap().is_empty(),
            "the raw receipt keeps the ack open"
        );
        // SAFETY: from into_raw, used once.
        unsafe { PendingReceipt::from_raw(raw) }.resolve(AckStatus::Errored);
        assert_eq!(*rec.0.lock().unwrap(), vec![(5, AckStatus::Errored)]);
        // A receipt dropped after the round trip still counts as errored.
        let ack = Ack::new(6, rec.clone());
        let raw = ack.receipt().into_raw();
        drop(ack);
        // SAFETY: as above.
        drop(unsafe { PendingReceipt::from_raw(raw) });
        assert_eq!(rec.0.lock().unwrap()[1], (6, AckStatus::Errored));
    }

    #[test]
    fn untouched_ack_is_delivered() {
        let rec = Arc::new(Recorder::default());
        drop(Ack::new(3, rec.clone()));
        assert_eq!(*rec.0.lock().unwrap(), vec![(3, AckStatus::Delivered)]);
    }
}
