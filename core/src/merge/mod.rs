//! Merging two networks: budgets, layouts and the least-squares plan.

pub mod budget;
pub mod layout;
