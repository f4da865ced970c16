//! The notifications outbox (migrations `V5__notifications.sql`): each event a change reports
//! is recorded in the transaction of that change, one entry per endpoint that wants it, and
//! delivered at least once by whichever replica claims it (`registry::notify`).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::MetaError;

/// One event for one endpoint, to be recorded with the change it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The endpoint's configured name.
    pub endpoint: String,
    /// One object of the envelope's `events` array, as JSON text.
    pub event: String,
}

/// A recorded notice and its delivery so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub endpoint: String,
    pub event: String,
    /// Failed delivery attempts.
    pub attempts: u32,
    pub created: SystemTime,
    /// Given up on after its last attempt; delivered again only when replayed.
    pub failed: bool,
    pub last_error: Option<String>,
}

/// What follows a failed delivery attempt of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    After(Duration),
    GiveUp,
}

/// Entries of one endpoint not yet delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub failed: u64,
}

#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Records notices that report no change of their own (pulls).
    async fn record_notices(&self, notices: &[Notice]) -> Result<(), MetaError>;

    /// Claims up to `limit` of `endpoint`'s entries for `holder` until `lease` from now,
    /// oldest first: those not failed, due, and not claimed by a claim still running (a
    /// crashed replica's claim runs out). In id order.
    async fn claim_notices(
        &self,
        endpoint: &str,
        holder: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError>;

    /// Removes delivered entries (those `holder` still holds).
    async fn notices_delivered(&self, holder: &str, ids: &[i64]) -> Result<(), MetaError>;

    /// Counts a failed attempt on each entry `holder` still holds, with `error`, and
    /// releases it to be retried after the given delay or kept as failed.
    async fn notices_failed(
        &self,
        holder: &str,
        outcomes: &[(i64, Retry)],
        error: &str,
    ) -> Result<(), MetaError>;

    /// Entries with an id after `after`, in id order, at most `limit`; only failed ones
    /// with `failed_only`.
    async fn notices(
        &self,
        failed_only: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError>;

    /// Makes failed entries due again with no attempts counted: those of `endpoint` (or of
    /// every endpoint), and only `ids` when some are given. How many.
    async fn replay_notices(&self, endpoint: Option<&str>, ids: &[i64]) -> Result<u64, MetaError>;

    /// Deletes failed entries — and pending ones too with `pending` (an endpoint no longer
    /// configured, whose entries nothing will deliver) — of `endpoint` (or of every
    /// endpoint), only `ids` when some are given. How many.
    async fn purge_notices(
        &self,
        endpoint: Option<&str>,
        ids: &[i64],
        pending: bool,
    ) -> Result<u64, MetaError>;

    /// Per endpoint with any entry, in name order: entries pending and failed.
    async fn notice_counts(&self) -> Result<Vec<(String, OutboxCounts)>, MetaError>;
}
