//! Memory stays flat whatever the layer size (tests/common/memory.rs), on PostgreSQL and
//! the IPFS node; tests/memory_embedded.rs is the same on the embedded stores.

mod common;

use common::memory::a_large_layer_streams_through_in_bounded_memory;

// A process's peak resident size measures this test only while it is alone in its binary:
// one binary per store pair.
common::on_store_pairs!(
    [postgres_ipfs_node: PostgresIpfsNode] a_large_layer_streams_through_in_bounded_memory
);
