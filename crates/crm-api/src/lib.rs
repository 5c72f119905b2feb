//! Generated protobuf and gRPC code for the crm API (`proto/crm/v1`).
//!
//! Nothing here is written by hand except this module tree.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod codec;

/// `google.type` messages used by the API, and the standard `google.longrunning.Operations`
/// service with the `google.rpc.Status` it uses.
pub mod google {
    pub mod r#type {
        tonic::include_proto!("google.r#type");
    }
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The crm API.
pub mod crm {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("crm.v1");
    }
}

pub use crm::v1;

/// Encoded `FileDescriptorSet` of the whole API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("crm_descriptor");
