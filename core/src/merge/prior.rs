//! The permute-and-average prior of a merged layer and the exact-copy rule, shared by the host
//! merge and the allocation-free device merge (docs/ALGORITHM.md section 4).
//!
//! **Prior.** Every merged output row takes its sources' weight rows
//! ([`row_source`](super::sources::row_source)), each scaled by its weight, placed at the merged
//! input channels of their input units: merged input channels thus get the average of A's and
//! B's weights, private ones a copy ([`write_prior_row`]). With the ridge towards the prior
//! ([`RidgeToward::Average`]) the least-squares fit regresses on `R - G W0` and keeps `W0`
//! where the data says nothing.
//!
//! **Exact copies.** A merged channel is an exact copy of one model's unit when it is private
//! and its block reads only exact channels (the network input is exact)
//! ([`row_is_exact`]). A block that reads only exact channels keeps its prior without a solve
//! ([`block_is_copy`]): each row's target is then exactly the combination of its sources'
//! outputs the prior computes, so the prior has zero loss and zero ridge penalty and is the
//! problem's unique minimiser; a solve would only add rounding.

use super::sources::RowSource;

/// What the ridge term pulls the weights towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RidgeToward {
    /// The permute-and-average weights (the default, `--ridge-toward average`).
    Average,
    /// Zero (plain ridge).
    Zero,
}

impl RidgeToward {
    /// The CLI / report name.
    pub fn name(self) -> &'static str {
        match self {
            RidgeToward::Average => "average",
            RidgeToward::Zero => "zero",
        }
    }
}

/// One model's side of a prior row: the weight row (`in_units x patch` values, PyTorch order)
/// and the bias of a source unit.
pub type UnitWeights<'w> = (&'w [f32], Option<f32>);

/// Writes the permute-and-average weights of one merged output row into `out` (the row's
/// input columns, zeroed first) and `bias` (zeroed first): for each of `source`'s units, A's
/// first, `weights[side](unit)` scaled by its weight is added at `place[side](i)`, the offset
/// in `out` of the `patch` columns of the merged channel of that side's input unit `i`
/// (`None` where the row's block does not read it), and the bias likewise.
/// With [`RowSource::NONE`] the row stays zero (the prior of a ridge towards zero).
pub fn write_prior_row<'w>(
    source: RowSource,
    weights: [&dyn Fn(usize) -> UnitWeights<'w>; 2],
    place: [&dyn Fn(usize) -> Option<usize>; 2],
    patch: usize,
    out: &mut [f32],
    mut bias: Option<&mut f32>,
) {
    out.fill(0.0);
    if let Some(b) = bias.as_deref_mut() {
        *b = 0.0;
    }
    for (side, unit) in [source.a, source.b].into_iter().enumerate() {
        let Some((unit, alpha)) = unit else {
            continue;
        };
        let (row, unit_bias) = weights[side](unit);
        for (i, chunk) in row.chunks_exact(patch.max(1)).enumerate() {
            let Some(p) = place[side](i) else {
                continue;
            };
            for (o, &v) in out[p..p + chunk.len()].iter_mut().zip(chunk) {
                *o += alpha * v;
            }
        }
        if let (Some(b), Some(v)) = (bias.as_deref_mut(), unit_bias) {
            *b += alpha * v;
        }
    }
}

/// Whether a block keeps its permute-and-average weights without a solve: with the ridge
/// towards them, when every input column it reads (the bias aside) is an exact channel.
pub fn block_is_copy(toward: RidgeToward, reads_exact: bool) -> bool {
    toward == RidgeToward::Average && reads_exact
}

/// Whether a merged output row is an exact copy of one model's unit: private, in a block that
/// reads only exact channels.
pub fn row_is_exact(source: RowSource, block_reads_exact: bool) -> bool {
    source.private() && block_reads_exact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_rows_average_merged_inputs_and_copy_private_ones() {
        // A's unit 0 reads inputs [1, 2] (patch 1) at merged channels 0 and 1; B's unit 1
        // reads [3, 4] at merged channels 0 and 2.
        let wa = [1.0f32, 2.0];
        let wb = [0.0f32, 0.0, 3.0, 4.0];
        let a = |_u: usize| -> UnitWeights<'_> { (&wa[..], Some(1.0)) };
        let b = |u: usize| -> UnitWeights<'_> { (&wb[u * 2..u * 2 + 2], Some(3.0)) };
        let place_a = |i: usize| Some([0, 1][i]);
        let place_b = |i: usize| Some([0, 2][i]);
        let mut out = [9.0f32; 3];
        let mut bias = 9.0f32;
        let source = RowSource {
            a: Some((0, 0.5)),
            b: Some((1, 0.5)),
        };
        write_prior_row(
            source,
            [&a, &b],
            [&place_a, &place_b],
            1,
            &mut out,
            Some(&mut bias),
        );
        assert_eq!(out, [2.0, 1.0, 2.0]);
        assert_eq!(bias, 2.0);
        write_prior_row(
            RowSource::NONE,
            [&a, &b],
            [&place_a, &place_b],
            1,
            &mut out,
            Some(&mut bias),
        );
        assert_eq!((out, bias), ([0.0; 3], 0.0));
    }

    #[test]
    fn copies_need_the_average_prior_and_exact_inputs() {
        assert!(block_is_copy(RidgeToward::Average, true));
        assert!(!block_is_copy(RidgeToward::Zero, true));
        assert!(!block_is_copy(RidgeToward::Average, false));
        let private = RowSource {
            a: Some((0, 1.0)),
            b: None,
        };
        let merged = RowSource {
            a: Some((0, 0.5)),
            b: Some((0, 0.5)),
        };
        assert!(row_is_exact(private, true));
        assert!(!row_is_exact(private, false));
        assert!(!row_is_exact(merged, true));
    }
}
