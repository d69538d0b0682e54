//! Generated protocol types and gRPC stubs shared by the Defender and the Console. No logic here.

/// Version 1 of the Defender protocol.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("defender.v1");
}

/// Largest gRPC message either side accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most events one `EventBatch` may carry.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Most argv bytes one process event carries; longer argv is truncated and flagged.
pub const MAX_ARGV_BYTES: usize = 16 * 1024;
/// Largest encoded `Inventory` event: it must fit a task-local frame with room to spare.
pub const MAX_INVENTORY_BYTES: usize = 200 * 1024;
/// Largest frame on the task-local Unix socket (an event with a full argv fits easily).
pub const MAX_LOCAL_FRAME_BYTES: usize = 256 * 1024;
