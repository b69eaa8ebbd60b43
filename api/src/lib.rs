//! monovirt's API types: the KubeVirt, CDI and core Kubernetes resources monovirt serves,
//! with their defaults, validation, OpenAPI schemas and table columns. Pure data: no I/O.
//!
//! - [`status`]: the API error type, rendered as a Kubernetes `Status`.
//! - [`resource`]: the registry contract ([`resource::ResourceDef`]) and look-ups;
//!   [`resources`] lists every served kind ([`registry`]).
//! - The kinds, one module per API group: [`kubevirt`] (`kubevirt.io/v1`), [`cdi`]
//!   (`cdi.kubevirt.io/v1beta1`), [`core`] (`v1`), [`storage`] (`storage.k8s.io/v1`),
//!   [`network`] (`k8s.cni.cncf.io/v1`, `nmstate.io/v1`), [`hco`] (`hco.kubevirt.io/v1beta1`).
//! - Machinery shared by every kind: [`validation`] (names, labels, causes),
//!   [`immutability`] (what an update may not change), [`schema`]
//!   (schemas, unknown fields, type checks), [`openapi`] (the served documents), [`table`]
//!   (printer columns, ages), [`quantity`], [`overlay`], [`unstructured`].
//!
//! The stored object is always the JSON the client sent (plus defaults); the typed structs
//! are used to default and validate it and by controllers to read it. Fields the types do not
//! model are either declared free-form ([`unstructured::Unstructured`], preserved by the
//! schema) or reported by [`resource::ResourceDef::unknown_fields`].
#![forbid(unsafe_code)]

pub mod cdi;
pub mod core;
pub mod hco;
pub mod immutability;
pub mod kubevirt;
pub mod network;
pub mod openapi;
pub mod overlay;
pub mod quantity;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod status;
pub mod storage;
pub mod table;
pub mod unstructured;
pub mod validation;

pub use registry::resources;
