//! Compiles `proto/streamgate/v1/*.proto` with tonic-prost-build and writes the descriptor set
//! that the reflection service serves.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no system protoc.
//! `google.rpc.Status` is mapped to `tonic_types::pb::Status`; our hand-written
//! `google/rpc/status.proto` stays in the descriptor set so reflection can resolve the import.
//! The services use `crate::pb::codec::ProtoCodec` (a request that does not decode is
//! INVALID_ARGUMENT). So does the health service: `proto/grpc/health/v1/health.proto` is
//! compiled into a server stub only, over tonic-health's own messages (an extern path), so that
//! the gateway serves tonic-health's service through that codec.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; this only points tonic-prost-build at the
    // vendored protoc before anything reads the variable.
    unsafe {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("streamgate_descriptor.bin");
    let protos = [
        "proto/streamgate/v1/stream.proto",
        "proto/streamgate/v1/stream_service.proto",
        "proto/streamgate/v1/endpoint.proto",
        "proto/streamgate/v1/operation.proto",
        "proto/streamgate/v1/provider.proto",
        "proto/streamgate/v1/audit.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .extern_path(".google.rpc", "::tonic_types::pb")
        .codec_path("crate::pb::codec::ProtoCodec")
        .compile_protos(
            &protos.map(PathBuf::from),
            &[PathBuf::from("proto"), protoc_bin_vendored::include_path()?],
        )?;

    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".grpc.health.v1", "::tonic_health::pb")
        .codec_path("crate::pb::codec::ProtoCodec")
        .compile_protos(
            &[PathBuf::from("proto/grpc/health/v1/health.proto")],
            &[PathBuf::from("proto")],
        )?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
