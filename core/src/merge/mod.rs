//! Merging two networks: budgets, layouts and the least-squares plan.
//!
//! Most of this module builds merged models on the heap (feature `alloc`). What needs no
//! allocation: the budget arithmetic of [`budget`] (ratios from a FLOP budget), the device
//! merge's one [`driver`] (matching, layouts, sequential fits over a source of data passes),
//! and its two uses, [`mlp`] and [`cnn`], the whole PLeaS merge of two MLPs or two small CNNs
//! in caller-owned memory (for microcontrollers). What the host and the device share is
//! allocation-free too: where a merged unit comes from ([`sources`]), the permute-and-average
//! prior and the exact-copy rule ([`prior`]), and the contract of a source of data passes
//! ([`pass`]).

#[cfg(feature = "alloc")]
pub mod blocks;
pub mod budget;
pub mod cnn;
pub mod driver;
#[cfg(feature = "alloc")]
pub mod fit;
pub mod layout;
#[cfg(feature = "alloc")]
pub mod matching;
pub mod mlp;
pub mod pairs;
pub mod pass;
pub mod prior;
pub mod sources;
#[cfg(feature = "alloc")]
pub mod weight_matching;

pub use prior::RidgeToward;
pub use sources::{Heads, RowSource, TargetRule, UnitLayout};
