//! The generated code of `proto/streamgate/v1` (types, clients and servers), the codec its
//! services use ([`codec`]), and its descriptor set for reflection; and [`health`], the
//! `grpc.health.v1` server stub that serves tonic-health's service through the same codec.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("streamgate.v1");
}

pub mod codec;

/// The `grpc.health.v1` server stub over tonic-health's messages, with [`codec`]'s decoding.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

pub use generated::*;

/// The encoded descriptors of `streamgate.v1` and the `google.rpc.Status` it imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/streamgate_descriptor.bin"));
