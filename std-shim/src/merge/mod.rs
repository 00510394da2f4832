//! The merge pipeline's std side: streaming statistics over the merge data with the forward
//! pass, on top of the core's merge building blocks.
//!
//! - [`settings`]: every choice of a merge.
//! - [`plan`]: the layers, their costs and the groups' stages.
//! - [`activation_stats`]: step 1 statistics (streamed moments per group).
//! - [`merged_model`]: the block-structured merged network and its permute-and-average weights.
//! - [`store`]: live activations between data passes, spilled to disk beyond a budget.
//! - [`stream`]: the data passes of step 2.
//! - [`pipeline`]: the whole merge.

pub mod activation_stats;
pub mod merged_model;
pub mod pipeline;
pub mod plan;
pub mod settings;
pub mod store;
pub mod stream;
