//! What readiness probes and metrics ask of a metadata store beyond its data.

use async_trait::async_trait;

use super::MetaError;

/// Connection pool use, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub max: usize,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
}

#[async_trait]
pub trait StoreStatus: Send + Sync + 'static {
    /// Whether every schema migration this build knows is applied.
    async fn schema_current(&self) -> Result<bool, MetaError>;

    /// `None` for a store without a pool.
    fn pool_use(&self) -> Option<PoolUse>;

    /// Called when a call was abandoned at its deadline ([`super::deadline`]). A pool
    /// closes its idle connections: the abandoned call's connection is back among them
    /// with its query still in flight, and the others are likely just as stuck (a server
    /// that stopped answering, or connections a partition silently cut). New connections
    /// are opened as needed, each within `database.timeout`.
    fn discard_idle_connections(&self) {}
}
