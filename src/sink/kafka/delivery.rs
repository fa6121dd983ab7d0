//! A producer whose delivery reports are served in bursts.
//!
//! librdkafka reports deliveries per produced batch, one event per partition and request.
//! rust-rdkafka's `ThreadedProducer` wakes its thread for every such event; with many
//! partitions and small batches that is thousands of wake-ups a second, and the thread's cost
//! was mostly the context switches (0.5 CPU-µs per record in the fraud benchmark, against
//! 0.14 for a bare passthrough). Delivery reports only settle receipts, which feed offset
//! commits that happen every 250 ms at most, so serving them a couple of milliseconds late
//! costs nothing: this thread blocks until a report arrives, serves everything queued, then
//! waits [`DELIVERY_PACE`] before looking again.

use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::util::IntoOpaque;

use super::{DeliveryContext, settle};
use crate::ack::PendingReceipt;

/// How long delivery reports may gather between two rounds of serving them.
const DELIVERY_PACE: Duration = Duration::from_millis(2);
/// Longest the serving thread blocks without a report, so a stop is noticed promptly even if
/// the wake-up is missed.
const IDLE_WAIT_MS: i32 = 100;

/// A librdkafka producer and the thread that serves its delivery reports.
pub(super) struct PacedProducer {
    thread: Option<JoinHandle<()>>,
    /// Declared before the producer: a queue handle must go before its client.
    queue: Arc<MainQueue>,
    stop: Arc<AtomicBool>,
    producer: BaseProducer<DeliveryContext>,
}

impl PacedProducer {
    /// Starts serving `producer`'s delivery reports.
    pub(super) fn start(producer: BaseProducer<DeliveryContext>) -> std::io::Result<Self> {
        let queue = Arc::new(MainQueue::of(&producer));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (queue, stop) = (queue.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafka-deliveries".into())
                .spawn(move || serve_until_stopped(&queue, &stop))?
        };
        Ok(PacedProducer {
            thread: Some(thread),
            queue,
            stop,
            producer,
        })
    }

    /// The producer (to create topic handles and to flush).
    pub(super) fn producer(&self) -> &BaseProducer<DeliveryContext> {
        &self.producer
    }
}

impl Drop for PacedProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.queue.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_until_stopped(queue: &MainQueue, stop: &AtomicBool) {
    let mut messages = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if queue.serve(IDLE_WAIT_MS, &mut messages) > 0 {
            std::thread::sleep(DELIVERY_PACE);
        }
    }
    // Reports that arrived meanwhile; anything later is served by the flush on drop.
    queue.serve(0, &mut messages);
}

/// A handle of the producer's main queue, where librdkafka puts delivery reports and errors.
struct MainQueue(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka queues are thread-safe; the handle is destroyed once, in `drop`.
unsafe impl Send for MainQueue {}
// SAFETY: as above.
unsafe impl Sync for MainQueue {}

impl MainQueue {
    fn of(producer: &BaseProducer<DeliveryContext>) -> Self {
        // SAFETY: the client is live; the handle is a reference to its main queue.
        let queue = unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        MainQueue(NonNull::new(queue).expect("a producer has a main queue"))
    }

    /// Interrupts a blocked `serve`.
    fn wake(&self) {
        // SAFETY: the handle is live until drop.
        unsafe { rd::rd_kafka_queue_yield(self.0.as_ptr()) };
    }

    /// Waits up to `wait_ms` for an event, then serves it and every other one queued.
    /// Returns how many events were served.
    fn serve(&self, wait_ms: i32, messages: &mut Vec<*const rd::rd_kafka_message_t>) -> usize {
        let mut served = 0;
        let mut timeout = wait_ms;
        loop {
            // SAFETY: polling a live queue; the event is ours until destroyed below.
            let event = unsafe { rd::rd_kafka_queue_poll(self.0.as_ptr(), timeout) };
            let Some(event) = NonNull::new(event) else {
                return served;
            };
            timeout = 0;
            served += 1;
            // SAFETY: the event is live until destroyed at the end of this iteration.
            unsafe {
                match rd::rd_kafka_event_type(event.as_ptr()) {
                    rd::RD_KAFKA_EVENT_DR => settle_deliveries(event.as_ptr(), messages),
                    rd::RD_KAFKA_EVENT_ERROR => log_error(event.as_ptr()),
                    _ => {}
                }
                rd::rd_kafka_event_destroy(event.as_ptr());
            }
        }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: destroyed once, before the producer (the thread has ended and its clone is
        // gone; `PacedProducer` drops this field before the producer).
        unsafe { rd::rd_kafka_queue_destroy(self.0.as_ptr()) };
    }
}

/// Resolves the receipt of every message of a delivery-report event.
///
/// # Safety
/// `event` must be a live delivery-report event whose messages carry receipts as opaques.
unsafe fn settle_deliveries(
    event: *mut rd::rd_kafka_event_t,
    messages: &mut Vec<*const rd::rd_kafka_message_t>,
) {
    // SAFETY: per the function's contract.
    unsafe {
        let count = rd::rd_kafka_event_message_count(event);
        messages.clear();
        messages.reserve(count);
        let got = rd::rd_kafka_event_message_array(event, messages.as_mut_ptr(), count);
        messages.set_len(got.min(count));
        for &message in messages.iter() {
            let message = &*message;
            let receipt = PendingReceipt::from_ptr(message._private);
            if message.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                settle(receipt, None);
            } else {
                let topic = if message.rkt.is_null() {
                    "?".into()
                } else {
                    CStr::from_ptr(rd::rd_kafka_topic_name(message.rkt)).to_string_lossy()
                };
                let error = rdkafka::error::RDKafkaErrorCode::from(message.err);
                settle(receipt, Some((&topic, &error, Some(error))));
            }
        }
        messages.clear();
    }
}

/// Logs a client error event (a broker down, a fatal idempotence error).
///
/// # Safety
/// `event` must be a live error event.
unsafe fn log_error(event: *mut rd::rd_kafka_event_t) {
    // SAFETY: per the function's contract; the string lives as long as the event.
    unsafe {
        let text = CStr::from_ptr(rd::rd_kafka_event_error_string(event)).to_string_lossy();
        if rd::rd_kafka_event_error_is_fatal(event) != 0 {
            tracing::error!(error = %text, "kafka producer: fatal error");
        } else {
            tracing::warn!(error = %text, "kafka producer error");
        }
    }
}
