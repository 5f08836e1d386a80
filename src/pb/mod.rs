//! The generated code of `proto/streamgate/v1` (types, clients and servers), the codec its
//! services use ([`codec`]), and its descriptor set for reflection.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("streamgate.v1");
}

pub mod codec;

pub use generated::*;

/// The encoded descriptors of `streamgate.v1` and the `google.rpc.Status` it imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/streamgate_descriptor.bin"));
