//! monovirt's API types: the KubeVirt, CDI and core Kubernetes resources monovirt serves,
//! with their defaults, validation and OpenAPI schemas. Pure data: no I/O.
//!
//! - [`status`]: the API error type, rendered as a Kubernetes `Status`.
//! - [`resource`]: the registry of served resources ([`resource::ResourceDef`]).
#![forbid(unsafe_code)]

pub mod resource;
pub mod status;
