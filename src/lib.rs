#![forbid(unsafe_code)]
//! ipfs-registry: an OCI Distribution v1.1 registry with metadata in PostgreSQL and blobs in IPFS.
//!
//! Data flows one way: `api → registry → {meta, blobs}`; `oci` holds pure domain types.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod durable;
pub mod error_chain;
pub mod file_lock;
pub mod logging;
pub mod meta;
pub mod metrics;
pub mod oci;
pub mod registry;
pub mod server;
pub mod tls;
