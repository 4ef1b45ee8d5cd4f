//! holdfast's manager API, generated from `proto/holdfast/v1` with
//! tonic/prost: the messages, the `Containers` client (used by the CLI) and
//! server trait (implemented by holdfastd).
//!
//! The `.proto` files are the documentation of every RPC and field; the
//! generated items carry those comments.
#![deny(unsafe_code)]

/// `holdfast.v1`: the containers holdfastd keeps.
pub mod v1 {
    #![allow(
        missing_docs,
        clippy::doc_lazy_continuation,
        clippy::large_enum_variant
    )]
    tonic::include_proto!("holdfast.v1");
}

/// The encoded file descriptor set of `holdfast.v1`, for the gRPC
/// reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("holdfast_v1_descriptor");
