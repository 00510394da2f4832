//! Merging two networks: budgets, layouts and the least-squares plan.

pub mod blocks;
pub mod budget;
pub mod fit;
pub mod layout;
pub mod matching;
pub mod weight_matching;
