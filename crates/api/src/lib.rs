//! holdfast's manager API, generated from `proto/holdfast/v1` with
//! tonic/prost: the messages, the `Containers` client (used by the CLI) and
//! server trait (implemented by holdfastd).
//!
//! The `.proto` files are the documentation of every RPC and field; the
//! generated items carry those comments.
#![deny(unsafe_code)]

pub mod duration;

/// `holdfast.v1`: the containers holdfastd keeps.
pub mod v1 {
    #![allow(
        missing_docs,
        clippy::doc_lazy_continuation,
        clippy::large_enum_variant
    )]
    tonic::include_proto!("holdfast.v1");
}

/// `holdfast.shim.v1`: the runtime options of holdfast's shim, which
/// holdfastd packs into containerd's `Container.runtime.options`.
pub mod shim {
    /// Version 1 of the shim's options.
    pub mod v1 {
        #![allow(missing_docs, clippy::doc_lazy_continuation)]
        tonic::include_proto!("holdfast.shim.v1");

        /// The type URL containerd hands to the shim with [`Options`].
        pub const OPTIONS_TYPE_URL: &str = "holdfast.shim.v1.Options";
    }
}

/// The encoded file descriptor set of `holdfast.v1`, for the gRPC
/// reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("holdfast_v1_descriptor");
