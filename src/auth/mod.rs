//! Who may do what on the API: bearer tokens ([`token`]), the roles they carry and what
//! each role allows ([`role`]), and the request attributes authorisation is decided on
//! ([`request`]), derived from the path the way kube-apiserver's RequestInfo does.
//!
//! The HTTP side (the middleware that answers 401/403 and the audit log) is in
//! `apiserver::auth` and `apiserver::audit`.

pub mod request;
pub mod role;
pub mod token;

pub use request::Attributes;
pub use role::{Grant, Role};
pub use token::{Identity, Tokens};
