//! The merge pipeline's std side: what needs `std` (files, threads, the spilling data
//! streamer, the report) on top of the core's merge (matching, the layout rules, the prior,
//! the exact-copy rule and the least-squares solves). In the order a merge runs:
//!
//! - [`settings`]: every choice of a merge.
//! - [`prepare`]: step 0, the pair, the settings and the data checked; batch-norm folded.
//! - [`layers`]: the layers, their costs and the groups' stages.
//! - [`matching`]: step 1, similarities ([`activation_stats`]: streamed moments per group;
//!   [`recorded`]: A's and B's layer outputs kept for step 2), ratios from the budget, layouts.
//! - [`merged_model`]: the block-structured merged network and its permute-and-average weights.
//! - [`schedule`]: the data passes of step 2 in order, their costs, the exact channels.
//! - [`store`]: live activations between data passes, spilled to disk beyond a budget
//!   ([`memory`]: the default budget).
//! - [`stream`]: the data passes of step 2 (sharded, threaded).
//! - [`host_source`]: the stream behind the core's pass contract (`PassSource`).
//! - [`solve`]: the least-squares solves of one pass.
//! - [`least_squares`]: step 2, every pass, then the outcome.
//! - [`report`]: progress events and what a merge reports.
//! - [`pipeline`]: the whole merge.

pub mod activation_stats;
pub mod host_source;
pub mod layers;
pub mod least_squares;
pub mod matching;
pub mod memory;
pub mod merged_model;
pub mod pipeline;
pub mod prepare;
pub mod recorded;
pub mod report;
pub mod schedule;
pub mod settings;
pub mod solve;
pub mod store;
pub mod stream;
