//! The merged layout of one permutation group: `[ merged (k) | A-only (n - k) | B-only (n - k) ]`.
//!
//! Given the assignment `perm` (A unit `i` matched to B unit `perm[i]`) and the A units whose
//! pairs are merged, the merged group has width `2n - k`. Each block lists units in increasing
//! order of the A index; the B-only block holds the B partners of the A-only units, in the
//! order of those A units. The layout map turns a pair of activations into merged ones:
//! `layout(u_A, u_B) = [ (u_A[M_A] + u_B[M_B]) / 2, u_A[S_A], u_B[S_B] ]`.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::sources::UnitLayout;

/// Why a layout could not be built or applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// `perm` is not a permutation of `0..n`: `index` repeats or is out of range.
    NotAPermutation {
        /// Position in `perm`.
        position: usize,
        /// The offending value.
        index: usize,
    },
    /// A merged A unit is out of range or listed twice.
    BadMergedUnit {
        /// The offending A unit.
        unit: usize,
    },
    /// A slice has the wrong length.
    LengthMismatch {
        /// What has the wrong length.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::NotAPermutation { position, index } => write!(
                f,
                "the assignment is not a permutation: entry {position} is {index}"
            ),
            LayoutError::BadMergedUnit { unit } => {
                write!(f, "merged unit {unit} is out of range or listed twice")
            }
            LayoutError::LengthMismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected length {expected}, found {found}"),
        }
    }
}

impl core::error::Error for LayoutError {}

/// The layout of one group in the merged network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLayout {
    /// Merged pairs `(A unit, B unit)`, in increasing A order.
    pub merged: Vec<(usize, usize)>,
    /// A-only units, in increasing order.
    pub a_only: Vec<usize>,
    /// B-only units: the partners of `a_only`, in the same order.
    pub b_only: Vec<usize>,
    /// Merged index of each A unit.
    index_a: Vec<usize>,
    /// Merged index of each B unit.
    index_b: Vec<usize>,
}

/// Where a unit of one original model sits in the merged layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// In the merged block, at this merged index (shared with its partner).
    Merged(usize),
    /// In its model's private block, at this merged index.
    Private(usize),
}

impl Slot {
    /// The merged index.
    pub fn index(self) -> usize {
        match self {
            Slot::Merged(i) | Slot::Private(i) => i,
        }
    }
}

impl GroupLayout {
    /// The layout for assignment `perm` with the pairs of the A units `merged_a` merged.
    pub fn new(perm: &[usize], merged_a: &[usize]) -> Result<Self, LayoutError> {
        let n = perm.len();
        let mut seen = vec![false; n];
        for (position, &index) in perm.iter().enumerate() {
            if index >= n || seen[index] {
                return Err(LayoutError::NotAPermutation { position, index });
            }
            seen[index] = true;
        }
        let mut is_merged = vec![false; n];
        for &unit in merged_a {
            if unit >= n || is_merged[unit] {
                return Err(LayoutError::BadMergedUnit { unit });
            }
            is_merged[unit] = true;
        }
        let merged = (0..n)
            .filter(|&i| is_merged[i])
            .map(|i| (i, perm[i]))
            .collect();
        let a_only: Vec<usize> = (0..n).filter(|&i| !is_merged[i]).collect();
        let b_only = a_only.iter().map(|&i| perm[i]).collect();
        let mut layout = Self {
            merged,
            a_only,
            b_only,
            index_a: Vec::new(),
            index_b: Vec::new(),
        };
        layout.index_a = layout.slots_a().into_iter().map(Slot::index).collect();
        layout.index_b = layout.slots_b().into_iter().map(Slot::index).collect();
        Ok(layout)
    }

    /// Width of each original model's group.
    pub fn original_width(&self) -> usize {
        self.merged.len() + self.a_only.len()
    }

    /// Width of the merged group, `2n - k`.
    pub fn merged_width(&self) -> usize {
        self.merged.len() + 2 * self.a_only.len()
    }

    /// Number of merged pairs `k`.
    pub fn merged_count(&self) -> usize {
        self.merged.len()
    }

    /// Index of the first A-only unit in the merged layout.
    pub fn a_offset(&self) -> usize {
        self.merged.len()
    }

    /// Index of the first B-only unit in the merged layout.
    pub fn b_offset(&self) -> usize {
        self.merged.len() + self.a_only.len()
    }

    /// The slot of every A unit (indexed by A unit).
    pub fn slots_a(&self) -> Vec<Slot> {
        let mut out = vec![Slot::Merged(0); self.original_width()];
        for (m, &(a, _)) in self.merged.iter().enumerate() {
            out[a] = Slot::Merged(m);
        }
        for (s, &a) in self.a_only.iter().enumerate() {
            out[a] = Slot::Private(self.a_offset() + s);
        }
        out
    }

    /// The slot of every B unit (indexed by B unit).
    pub fn slots_b(&self) -> Vec<Slot> {
        let mut out = vec![Slot::Merged(0); self.original_width()];
        for (m, &(_, b)) in self.merged.iter().enumerate() {
            out[b] = Slot::Merged(m);
        }
        for (s, &b) in self.b_only.iter().enumerate() {
            out[b] = Slot::Private(self.b_offset() + s);
        }
        out
    }

    /// `out = layout(u_a, u_b)`: averages of merged pairs, then A-only, then B-only values.
    pub fn apply(&self, u_a: &[f32], u_b: &[f32], out: &mut [f32]) -> Result<(), LayoutError> {
        let n = self.original_width();
        for (what, len, want) in [
            ("A activations", u_a.len(), n),
            ("B activations", u_b.len(), n),
            ("merged activations", out.len(), self.merged_width()),
        ] {
            if len != want {
                return Err(LayoutError::LengthMismatch {
                    what,
                    expected: want,
                    found: len,
                });
            }
        }
        for (o, &(a, b)) in out.iter_mut().zip(&self.merged) {
            *o = 0.5 * (u_a[a] + u_b[b]);
        }
        let (ao, bo) = (self.a_offset(), self.b_offset());
        for (s, &a) in self.a_only.iter().enumerate() {
            out[ao + s] = u_a[a];
        }
        for (s, &b) in self.b_only.iter().enumerate() {
            out[bo + s] = u_b[b];
        }
        Ok(())
    }
}

impl UnitLayout for GroupLayout {
    fn original_width(&self) -> usize {
        GroupLayout::original_width(self)
    }
    fn merged_count(&self) -> usize {
        GroupLayout::merged_count(self)
    }
    fn pair(&self, m: usize) -> (usize, usize) {
        self.merged[m]
    }
    fn a_only(&self, s: usize) -> usize {
        self.a_only[s]
    }
    fn b_only(&self, s: usize) -> usize {
        self.b_only[s]
    }
    fn slot_a(&self, i: usize) -> usize {
        self.index_a[i]
    }
    fn slot_b(&self, j: usize) -> usize {
        self.index_b[j]
    }
}
