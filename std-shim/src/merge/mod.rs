//! The merge pipeline's std side: streaming statistics over the merge data with the forward
//! pass, on top of the core's merge building blocks.

pub mod activation_stats;
