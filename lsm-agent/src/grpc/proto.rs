//! Generated code for the Tetragon-compatible API (see `proto/tetragon/*.proto`).

/// Package `tetragon`: messages, `fine_guidance_sensors_server` and `fine_guidance_sensors_client`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod tetragon {
    tonic::include_proto!("tetragon");
}
