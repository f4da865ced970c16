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
}
