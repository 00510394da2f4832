//! Merging two networks: budgets, layouts and the least-squares plan.
//!
//! Most of this module builds merged models on the heap (feature `alloc`). Two parts need no
//! allocation: the budget arithmetic of [`budget`] (ratios from a FLOP budget) and [`mlp`],
//! the whole PLeaS merge of two MLPs in caller-owned memory (for microcontrollers).

#[cfg(feature = "alloc")]
pub mod blocks;
pub mod budget;
#[cfg(feature = "alloc")]
pub mod fit;
#[cfg(feature = "alloc")]
pub mod layout;
#[cfg(feature = "alloc")]
pub mod matching;
pub mod mlp;
#[cfg(feature = "alloc")]
pub mod weight_matching;
