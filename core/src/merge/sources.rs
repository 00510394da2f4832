//! Where a merged unit comes from, shared by the host merge (layouts on the heap) and the
//! allocation-free device merge (layouts in the caller's index scratch).
//!
//! A permutation group of width `n` with `k` merged pairs is laid out
//! `[merged (k) | A-only (n - k) | B-only (n - k)]` (docs/ALGORITHM.md section 3).
//! [`UnitLayout`] is that layout, whatever holds it; [`row_source`] says which original units
//! feed a merged output row and with what weight (the one rule for targets and for the
//! permute-and-average prior); [`Heads`] and [`TargetRule`] name the rows of a layer that is in
//! no group (the heads).

/// The layout of one permutation group, read through its storage. Implemented once, by
/// [`GroupLayout`](super::layout::GroupLayout) over any storage: owned lists (with `alloc`)
/// or the caller's index scratch (the device merge).
pub trait UnitLayout {
    /// Units per model `n`.
    fn original_width(&self) -> usize;
    /// Merged pairs `k`.
    fn merged_count(&self) -> usize;
    /// The A unit and the B unit of merged pair `m < k`.
    fn pair(&self, m: usize) -> (usize, usize);
    /// The A unit of private slot `s < n - k` (merged index `k + s`).
    fn a_only(&self, s: usize) -> usize;
    /// The B unit of private slot `s < n - k` (merged index `n + s`): the partner of
    /// [`a_only`](Self::a_only)`(s)`.
    fn b_only(&self, s: usize) -> usize;
    /// Merged index of A unit `i`.
    fn slot_a(&self, i: usize) -> usize;
    /// Merged index of B unit `j`.
    fn slot_b(&self, j: usize) -> usize;

    /// Width of the merged group, `2n - k`.
    fn merged_width(&self) -> usize {
        2 * self.original_width() - self.merged_count()
    }
}

impl<L: UnitLayout + ?Sized> UnitLayout for &L {
    fn original_width(&self) -> usize {
        (**self).original_width()
    }
    fn merged_count(&self) -> usize {
        (**self).merged_count()
    }
    fn pair(&self, m: usize) -> (usize, usize) {
        (**self).pair(m)
    }
    fn a_only(&self, s: usize) -> usize {
        (**self).a_only(s)
    }
    fn b_only(&self, s: usize) -> usize {
        (**self).b_only(s)
    }
    fn slot_a(&self, i: usize) -> usize {
        (**self).slot_a(i)
    }
    fn slot_b(&self, j: usize) -> usize {
        (**self).slot_b(j)
    }
}

/// One head or two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// Shared label space: one head fitted to the mean of both models' logits.
    Shared,
    /// Different label spaces: head `a` on `[merged | A-only]` fitted to A's logits and head
    /// `b` on `[merged | B-only]` fitted to B's.
    Separate,
}

/// How a merged layer's rows (its targets, and its prior) are formed from A's and B's
/// outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRule {
    /// Through the layout of this group.
    Layout(usize),
    /// The mean of both (a shared head).
    Average,
    /// A's outputs only (head `a`).
    OnlyA,
    /// B's outputs only (head `b`).
    OnlyB,
}

/// Which original units feed a merged output row, each with its weight in the row's target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSource {
    /// A's unit and its weight.
    pub a: Option<(usize, f32)>,
    /// B's unit and its weight.
    pub b: Option<(usize, f32)>,
}

impl RowSource {
    /// No source (a row whose prior is zero).
    pub const NONE: RowSource = RowSource { a: None, b: None };

    /// Whether the row is one model's unit alone (a private unit, or a head of one model).
    pub fn private(&self) -> bool {
        self.a.is_some() != self.b.is_some()
    }

    /// The row's target from A's value `a` and B's value `b` of its source units, formed in
    /// f32 as both merges form it (`w_a a + w_b b`).
    #[inline]
    pub fn target(&self, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
        match (self.a, self.b) {
            (Some((i, wa)), Some((j, wb))) => wa * a(i) + wb * b(j),
            (Some((i, w)), None) => w * a(i),
            (None, Some((j, w))) => w * b(j),
            (None, None) => 0.0,
        }
    }
}

/// The sources of merged output row `r` of a layer whose rows follow `rule`; `layout(g)` gives
/// the layout of group `g` (read only for [`TargetRule::Layout`]). A merged pair gives
/// `(a + b) / 2`, a private unit itself, a shared head the mean of both models' row `r`.
pub fn row_source<L: UnitLayout>(
    rule: TargetRule,
    layout: impl FnOnce(usize) -> L,
    r: usize,
) -> RowSource {
    match rule {
        TargetRule::Layout(g) => {
            let l = layout(g);
            let (k, n) = (l.merged_count(), l.original_width());
            if r < k {
                let (a, b) = l.pair(r);
                RowSource {
                    a: Some((a, 0.5)),
                    b: Some((b, 0.5)),
                }
            } else if r < n {
                RowSource {
                    a: Some((l.a_only(r - k), 1.0)),
                    b: None,
                }
            } else {
                RowSource {
                    a: None,
                    b: Some((l.b_only(r - n), 1.0)),
                }
            }
        }
        TargetRule::Average => RowSource {
            a: Some((r, 0.5)),
            b: Some((r, 0.5)),
        },
        TargetRule::OnlyA => RowSource {
            a: Some((r, 1.0)),
            b: None,
        },
        TargetRule::OnlyB => RowSource {
            a: None,
            b: Some((r, 1.0)),
        },
    }
}
