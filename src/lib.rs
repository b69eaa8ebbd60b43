//! monovirt: KubeVirt without Kubernetes. The roles of the one binary are modules here:
//! `store` (objects, revisions, watch log), `apiserver` (REST API), `client`, `cli` (the client
//! commands), `controller`, `scheduler`, `agent` (with the node-local `image` store), `vmm`,
//! `storage` and `network`.

pub mod agent;
pub mod apiserver;
pub mod auth;
pub mod cli;
pub mod client;
pub mod controller;
pub mod daemon;
pub mod image;
pub mod network;
pub mod scheduler;
pub mod storage;
pub mod store;
pub mod vmm;
