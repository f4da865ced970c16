#![forbid(unsafe_code)]
//! ipfs-registry: an OCI Distribution v1.1 registry with metadata in PostgreSQL and blobs in IPFS.
//!
//! Data flows one way: `api → registry → {meta, blobs}`; `oci` holds pure domain types.

pub mod api;
pub mod blobs;
pub mod config;
pub mod meta;
pub mod oci;
pub mod registry;
pub mod server;
