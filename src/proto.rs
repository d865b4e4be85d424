//! Code generated from `proto/` by tonic-prost-build, and the encoded file
//! descriptor set that server reflection serves. Nothing else lives here.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Package `tenancy.v1`.
pub mod tenancy {
    pub mod v1 {
        tonic::include_proto!("tenancy.v1");
    }
}

pub use tenancy::v1::*;

/// The descriptors of `tenancy.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tenancy_v1_descriptor");
