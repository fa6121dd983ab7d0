//! Producing one message through librdkafka by topic handle.
//!
//! rust-rdkafka's `send` names the topic on every call: a `CString` allocation, then
//! librdkafka looks the topic up by name under the client's lock. The sink produces to one
//! topic, so it keeps librdkafka's handle of it and passes that instead; the delivery report
//! still reaches rust-rdkafka's polling thread and the sink's `DeliveryContext` as before.

use std::ffi::{CString, c_void};
use std::ptr::NonNull;

use rdkafka::bindings as rd;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use rdkafka::util::IntoOpaque;

use crate::ack::PendingReceipt;

/// librdkafka's `RD_KAFKA_PARTITION_UA`: let the producer's partitioner choose (by key).
const PARTITION_UNASSIGNED: i32 = -1;

/// librdkafka's handle of one topic of a producer. Drop it before the producer.
pub(super) struct TopicHandle {
    topic: NonNull<rd::rd_kafka_topic_t>,
    client: NonNull<rd::rd_kafka_t>,
}

// SAFETY: librdkafka topic handles may be used from any thread; this one is destroyed once.
unsafe impl Send for TopicHandle {}
// SAFETY: as above; producing through a handle is thread-safe in librdkafka.
unsafe impl Sync for TopicHandle {}

/// Why a topic handle cannot be created.
#[derive(Debug, thiserror::Error)]
pub(super) enum TopicHandleError {
    /// The topic name holds a NUL byte.
    #[error("topic name contains NUL")]
    Nul,
    /// The producer has no librdkafka client.
    #[error("producer has no client")]
    NoClient,
    /// librdkafka refused the topic.
    #[error("topic {topic}: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        code: RDKafkaErrorCode,
    },
}

impl TopicHandle {
    /// A handle of `topic` with the producer's default topic settings.
    pub(super) fn new<C, P>(producer: &P, topic: &str) -> Result<Self, TopicHandleError>
    where
        C: rdkafka::producer::ProducerContext,
        P: Producer<C>,
    {
        let name = CString::new(topic).map_err(|_| TopicHandleError::Nul)?;
        let client =
            NonNull::new(producer.client().native_ptr()).ok_or(TopicHandleError::NoClient)?;
        // SAFETY: the client is live; a null topic config means the producer's defaults.
        let handle =
            unsafe { rd::rd_kafka_topic_new(client.as_ptr(), name.as_ptr(), std::ptr::null_mut()) };
        let topic = NonNull::new(handle).ok_or_else(|| {
            // SAFETY: reads the calling thread's last librdkafka error.
            let code = RDKafkaErrorCode::from(unsafe { rd::rd_kafka_last_error() });
            TopicHandleError::Refused {
                topic: topic.to_string(),
                code,
            }
        })?;
        Ok(TopicHandle { topic, client })
    }

    /// Enqueues one message (payload and key copied) on the producer's queue, partitioned by
    /// the producer's partitioner. The receipt rides as the message's opaque and comes back
    /// in the delivery report; when librdkafka refuses the message it comes back here, with
    /// `headers` still the caller's.
    pub(super) fn produce(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &mut Option<NativeHeaders>,
        receipt: PendingReceipt,
    ) -> Result<(), (RDKafkaErrorCode, PendingReceipt)> {
        use rd::rd_kafka_vtype_t::*;
        let (key_ptr, key_len) = key.map_or((std::ptr::null(), 0), |k| (k.as_ptr(), k.len()));
        let headers_ptr = headers
            .as_ref()
            .map_or(std::ptr::null_mut(), |h| h.headers.as_ptr());
        let opaque = receipt.into_ptr();
        // SAFETY: the argument list is librdkafka's (type tag, value) pairs ending with END;
        // payload and key are copied (F_COPY) before the call returns; on success librdkafka
        // owns the headers, on failure it leaves them (and the opaque) to us.
        let err = unsafe {
            rd::rd_kafka_producev(
                self.client.as_ptr(),
                RD_KAFKA_VTYPE_RKT,
                self.topic.as_ptr(),
                RD_KAFKA_VTYPE_PARTITION,
                PARTITION_UNASSIGNED,
                RD_KAFKA_VTYPE_MSGFLAGS,
                rd::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                payload.as_ptr().cast::<c_void>().cast_mut(),
                payload.len(),
                RD_KAFKA_VTYPE_KEY,
                key_ptr.cast::<c_void>().cast_mut(),
                key_len,
                RD_KAFKA_VTYPE_OPAQUE,
                opaque,
                RD_KAFKA_VTYPE_HEADERS,
                headers_ptr,
                RD_KAFKA_VTYPE_END,
            )
        };
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            if let Some(h) = headers.take() {
                std::mem::forget(h);
            }
            Ok(())
        } else {
            // SAFETY: librdkafka did not take the message, so the opaque is still ours, once.
            let receipt = unsafe { PendingReceipt::from_ptr(opaque) };
            Err((RDKafkaErrorCode::from(err), receipt))
        }
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_new, destroyed once, before the producer.
        unsafe { rd::rd_kafka_topic_destroy(self.topic.as_ptr()) };
    }
}

/// Message headers built for librdkafka, owned until a successful produce takes them.
pub(super) struct NativeHeaders {
    headers: NonNull<rd::rd_kafka_headers_t>,
}

// SAFETY: a plain heap object of librdkafka, owned by this value.
unsafe impl Send for NativeHeaders {}

impl NativeHeaders {
    /// Room for `count` headers (more may be added).
    pub(super) fn with_capacity(count: usize) -> Self {
        // SAFETY: allocates an empty header list; librdkafka aborts on allocation failure
        // like Rust does.
        let headers = unsafe { rd::rd_kafka_headers_new(count) };
        NativeHeaders {
            headers: NonNull::new(headers).expect("librdkafka allocates header lists"),
        }
    }

    /// Appends a header; `None` is a header without value.
    pub(super) fn add(&mut self, name: &str, value: Option<&[u8]>) {
        let (value_ptr, value_len) = value.map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len()));
        // SAFETY: name and value are copied; lengths are given, so no NUL is needed. Lengths
        // of Rust slices fit in isize.
        unsafe {
            rd::rd_kafka_header_add(
                self.headers.as_ptr(),
                name.as_ptr().cast(),
                name.len() as isize,
                value_ptr.cast(),
                value_len as isize,
            );
        }
    }
}

impl Drop for NativeHeaders {
    fn drop(&mut self) {
        // SAFETY: still ours (a successful produce forgets this value instead).
        unsafe { rd::rd_kafka_headers_destroy(self.headers.as_ptr()) };
    }
}
