//! Generated gRPC types for `suppressd.v1`. Proto types stay at the edge: the engine and policy
//! never see them; `server::grpc` converts at the boundary.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("suppressd.v1");

/// The admin plane: mutations, erasure receipts, reload and compaction.
pub mod admin {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("suppressd.admin.v1");
}

/// Encoded descriptor set of every proto file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/suppressd_descriptor.bin"));
