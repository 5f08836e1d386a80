//! What a provider kind supports, the endpoints it gives included. Dispatch checks it before
//! calling an adapter; callers read it through ProviderService. No shared test suite is gated on it yet.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::endpoint::EndpointSupport;

/// A StreamService method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// CreateStream.
    CreateStream,
    /// GetStream.
    GetStream,
    /// ListStreams.
    ListStreams,
    /// UpdateStream.
    UpdateStream,
    /// DeleteStream.
    DeleteStream,
    /// BatchDeleteStreams.
    BatchDeleteStreams,
    /// WatchStream.
    WatchStream,
    /// GetStreamEndpoints: supported only where the kind also declares endpoints.
    GetStreamEndpoints,
}

impl Method {
    /// Every method, in the order the API declares them.
    pub const ALL: [Method; 8] = [
        Method::CreateStream,
        Method::GetStream,
        Method::ListStreams,
        Method::UpdateStream,
        Method::DeleteStream,
        Method::BatchDeleteStreams,
        Method::WatchStream,
        Method::GetStreamEndpoints,
    ];

    /// The method's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::CreateStream => "CreateStream",
            Method::GetStream => "GetStream",
            Method::ListStreams => "ListStreams",
            Method::UpdateStream => "UpdateStream",
            Method::DeleteStream => "DeleteStream",
            Method::BatchDeleteStreams => "BatchDeleteStreams",
            Method::WatchStream => "WatchStream",
            Method::GetStreamEndpoints => "GetStreamEndpoints",
        }
    }

    /// Parses a method's API name.
    pub fn parse(text: &str) -> Option<Self> {
        Method::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// The capability of one provider instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Supported methods.
    pub methods: Vec<Method>,
    /// Whether etags guard update and delete.
    pub etags: bool,
    /// The most names per BatchDeleteStreams call.
    pub max_batch_size: usize,
    /// Accepted ListStreams filter terms.
    pub list_filters: Vec<&'static str>,
    /// The parent pattern of streams.
    pub stream_parent_pattern: &'static str,
    /// A regular expression every stream id matches.
    pub stream_id_pattern: &'static str,
    /// The longest stream id.
    pub max_stream_id_len: usize,
    /// The longest retention in hours.
    pub max_data_retention_hours: i32,
    /// The most tags per stream.
    pub max_tags: usize,
    /// The largest ListStreams page.
    pub max_page_size: usize,
    /// The endpoints GetStreamEndpoints gives, per purpose; empty: none.
    pub endpoints: Vec<EndpointSupport>,
    /// The longest lifetime GetStreamEndpoints accepts.
    pub max_endpoint_lifetime: Duration,
}

impl Capability {
    /// Whether `method` is supported. GetStreamEndpoints needs declared endpoints too, so a
    /// kind that lists every method but serves no endpoint does not claim it.
    pub fn supports(&self, method: Method) -> bool {
        self.methods.contains(&method)
            && (method != Method::GetStreamEndpoints || !self.endpoints.is_empty())
    }

    /// The supported methods, in the order the API declares them.
    pub fn supported_methods(&self) -> impl Iterator<Item = Method> + '_ {
        self.methods.iter().copied().filter(|m| self.supports(*m))
    }
}
