//! The provider-neutral model: names, streams, operations, capabilities, endpoints, paging.
//!
//! Nothing here knows tonic, sqlx or a provider SDK; `api` converts to and from protobuf, the
//! adapters to and from their providers.

pub mod capability;
pub mod endpoint;
pub mod names;
pub mod operation;
pub mod page;
pub mod stream;
pub mod validate;

pub use capability::{Capability, Method};
pub use endpoint::{
    CloudFrontTarget, CustomPolicy, Endpoint, EndpointProtocol, EndpointPurpose, EndpointSupport,
    EndpointsRequest, PlaybackMode,
};
pub use names::{OperationName, ParentName, ProviderName, StreamName};
pub use operation::{BatchItem, OpRequest, OpResult, Operation, STEP_ACCEPTED, STEP_DONE, Verb};
pub use page::{ListQuery, Page, PageTokens};
pub use stream::{
    AliyunVodDetails, CloudFrontDetails, CloudFrontOrigin, Stream, StreamDetails, StreamPatch,
    StreamSpec, StreamState,
};

/// Milliseconds since the Unix epoch, the time unit of the model and the store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
