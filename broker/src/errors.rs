//! The one place where icestream's errors become Kafka error codes.

use icestream_storage::batch::BatchError;
use icestream_storage::meta::UnitOutcome;
use icestream_storage::validate::ValidationError;
use icestream_storage::MetaError;
use kafka_protocol::ResponseError;

use crate::log::appender::AppendError;
use crate::log::ReadError;

pub const NONE: i16 = 0;

pub fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn meta(e: &MetaError) -> ResponseError {
    match e {
        MetaError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetaError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetaError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        MetaError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetaError::ProducerFenced { .. } => ResponseError::ProducerFenced,
        MetaError::NodeIdInUse(_) => ResponseError::UnknownServerError,
        MetaError::Kv(_)
        | MetaError::Corrupt { .. }
        | MetaError::SegmentAlreadyCommitted(_)
        | MetaError::SegmentTooOld(_) => ResponseError::UnknownServerError,
    }
}

/// Metadata failures while serving a request that clients retry (the store being
/// unreachable is transient from their point of view).
pub fn meta_retriable(e: &MetaError) -> ResponseError {
    match e {
        MetaError::Kv(_) => ResponseError::RequestTimedOut,
        other => meta(other),
    }
}

pub fn read(e: &ReadError) -> ResponseError {
    match e {
        ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        ReadError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        ReadError::Meta(m) => meta_retriable(m),
        ReadError::Object { .. } | ReadError::Table { .. } => ResponseError::KafkaStorageError,
        ReadError::Corrupt(_) => ResponseError::CorruptMessage,
    }
}

pub fn batch(e: &BatchError) -> ResponseError {
    match e {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::Truncated { .. }
        | BatchError::CrcMismatch { .. }
        | BatchError::InvalidLength(_)
        | BatchError::InvalidRecordCount { .. }
        | BatchError::UnknownCompression(_) => ResponseError::CorruptMessage,
    }
}

pub fn validation(e: &ValidationError) -> ResponseError {
    match e {
        ValidationError::Batch(b) => batch(b),
        ValidationError::Decompress(_)
        | ValidationError::Corrupt { .. }
        | ValidationError::RecordCount { .. }
        | ValidationError::LastOffsetDelta { .. } => ResponseError::CorruptMessage,
        ValidationError::LogAppendTimeFromProducer | ValidationError::Timestamp { .. } => {
            ResponseError::InvalidTimestamp
        }
        ValidationError::OffsetDelta { .. }
        | ValidationError::NullHeaderKey { .. }
        | ValidationError::MissingKey { .. }
        | ValidationError::Empty
        | ValidationError::ProducerFields
        | ValidationError::Control
        | ValidationError::Transactional => ResponseError::InvalidRecord,
    }
}

pub fn append(e: &AppendError) -> ResponseError {
    match e {
        AppendError::Storage(_) | AppendError::Commit(_) => ResponseError::KafkaStorageError,
        AppendError::ShuttingDown => ResponseError::RequestTimedOut,
    }
}

/// The error of a produce outcome, `None` for success.
pub fn outcome(o: &UnitOutcome) -> Option<ResponseError> {
    match o {
        UnitOutcome::Appended { .. } | UnitOutcome::Duplicate { .. } => None,
        UnitOutcome::UnknownTopicOrPartition => Some(ResponseError::UnknownTopicOrPartition),
        UnitOutcome::OutOfOrderSequence => Some(ResponseError::OutOfOrderSequenceNumber),
        UnitOutcome::ProducerFenced => Some(ResponseError::InvalidProducerEpoch),
        UnitOutcome::InvalidTxnState => Some(ResponseError::InvalidTxnState),
    }
}
