//! Forward passes of one sample through an original model or the merged network, in f32.
//!
//! Activations live in the f64 scratch as widened f32 values (exact both ways). Buffers hold
//! pre-activations; a layer reading a hidden layer applies its ReLU on reading.

use super::plan::MlpMergePlan;
use super::{LayerRef, Samples};

/// What a layer reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Vector<'a> {
    /// A merge sample.
    Sample(Samples<'a>),
    /// Pre-activations of a hidden layer (the ReLU is applied on reading).
    Hidden(&'a [f64]),
}

impl Vector<'_> {
    /// Element `j` as the layer sees it.
    #[inline]
    pub(super) fn at(&self, j: usize) -> f32 {
        match self {
            Vector::Sample(x) => x.at(j),
            Vector::Hidden(h) => relu(h[j] as f32),
        }
    }

    /// Length.
    pub(super) fn len(&self) -> usize {
        match self {
            Vector::Sample(x) => x.len(),
            Vector::Hidden(h) => h.len(),
        }
    }
}

/// The ReLU of the host's forward pass.
#[inline]
pub(super) fn relu(v: f32) -> f32 {
    v.max(0.0)
}

/// `out[o] = sum_j w[o, j] x_j + b[o]` in f32 (products summed in order, then the bias),
/// widened into `out` (its length is the layer's output width).
fn linear(weight: &[f32], bias: Option<&[f32]>, input: Vector<'_>, out: &mut [f64]) {
    let cols = input.len();
    for (o, y) in out.iter_mut().enumerate() {
        let row = &weight[o * cols..(o + 1) * cols];
        let mut acc = 0.0f32;
        match input {
            Vector::Sample(Samples::F32(x)) => {
                for (w, v) in row.iter().zip(x) {
                    acc += w * v;
                }
            }
            Vector::Sample(Samples::U8 { data, table }) => {
                for (w, &v) in row.iter().zip(data) {
                    acc += w * table[usize::from(v)];
                }
            }
            Vector::Hidden(h) => {
                for (w, v) in row.iter().zip(h) {
                    acc += w * relu(*v as f32);
                }
            }
        }
        if let Some(b) = bias {
            acc += b[o];
        }
        *y = f64::from(acc);
    }
}

/// Pre-activations of layer `upto` (hidden layers `0..L`, the head `L`) of an original model
/// for sample `x`, into `out[..width]`; `tmp` is a second buffer of the widest activation.
/// Returns the width.
pub(super) fn original(
    plan: &MlpMergePlan,
    layers: &[LayerRef<'_>],
    x: Vector<'_>,
    upto: usize,
    out: &mut [f64],
    tmp: &mut [f64],
) -> usize {
    let width = |i: usize| {
        if i < plan.hidden.len() {
            plan.hidden[i]
        } else {
            plan.classes
        }
    };
    // Layer `upto` must land in `out`: layers alternate between the two buffers.
    let (mut cur, mut other) = if upto.is_multiple_of(2) {
        (out, tmp)
    } else {
        (tmp, out)
    };
    linear(layers[0].weight, layers[0].bias, x, &mut cur[..width(0)]);
    for i in 1..=upto {
        let input = Vector::Hidden(&cur[..width(i - 1)]);
        linear(
            layers[i].weight,
            layers[i].bias,
            input,
            &mut other[..width(i)],
        );
        core::mem::swap(&mut cur, &mut other);
    }
    width(upto)
}

/// Pre-activations of merged hidden layer `upto` for sample `x`, from the fitted weights in
/// `weights` (the output buffer), into `out[..width]`; `tmp` as in [`original`]. Returns the
/// width.
pub(super) fn merged(
    plan: &MlpMergePlan,
    weights: &[f32],
    x: Vector<'_>,
    upto: usize,
    out: &mut [f64],
    tmp: &mut [f64],
) -> usize {
    let layer = |i: usize| {
        (
            &weights[plan.weight_range(i)],
            plan.bias_range(i).map(|r| &weights[r]),
        )
    };
    let (mut cur, mut other) = if upto.is_multiple_of(2) {
        (out, tmp)
    } else {
        (tmp, out)
    };
    let (w, b) = layer(0);
    linear(w, b, x, &mut cur[..plan.merged_widths[0]]);
    for i in 1..=upto {
        let (w, b) = layer(i);
        let input = Vector::Hidden(&cur[..plan.merged_widths[i - 1]]);
        linear(w, b, input, &mut other[..plan.merged_widths[i]]);
        core::mem::swap(&mut cur, &mut other);
    }
    plan.merged_widths[upto]
}

/// The activation buffers at the front of the f64 scratch: two per network (A, B, merged).
pub(super) struct Acts<'a> {
    /// A's pre-activations and its second buffer.
    pub(super) a: (&'a mut [f64], &'a mut [f64]),
    /// B's.
    pub(super) b: (&'a mut [f64], &'a mut [f64]),
    /// The merged network's.
    pub(super) m: (&'a mut [f64], &'a mut [f64]),
}

/// Splits the scratch into the activation buffers and the rest (the work space of a stage).
/// The plan sized the scratch, so the splits are in range.
pub(super) fn split<'a>(plan: &MlpMergePlan, scratch: &'a mut [f64]) -> (Acts<'a>, &'a mut [f64]) {
    let (w, m) = (plan.original_width(), plan.merged_width());
    let (a0, rest) = scratch.split_at_mut(w);
    let (a1, rest) = rest.split_at_mut(w);
    let (b0, rest) = rest.split_at_mut(w);
    let (b1, rest) = rest.split_at_mut(w);
    let (m0, rest) = rest.split_at_mut(m);
    let (m1, rest) = rest.split_at_mut(m);
    (
        Acts {
            a: (a0, a1),
            b: (b0, b1),
            m: (m0, m1),
        },
        rest,
    )
}
