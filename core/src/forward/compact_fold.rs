//! Folding eval-mode batch-norm into the conv or linear layer before it, in a compact network
//! ([`super::compact`]), without allocation: the rule and the arithmetic of
//! [`fold`](super::fold) (which folds graphs on the heap), so both give the same bits.
//!
//! A batch-norm layer whose input is the output of a conv or linear layer read by nothing
//! else (and not a network output) is removed; the layer's weight rows are scaled by
//! `s = gamma / sqrt(var + eps)` and its bias becomes `(b - mean) * s + beta` (`b = 0` if it
//! had none; the folded layer always has a bias). Arithmetic in f64, rounded once to f32.

use super::compact::{CompactError, CompactPlan, Layer, LayerOp, MAX_LAYERS, MAX_NODES, Network};

/// A network's structure after folding: its layers and outputs, and where every folded layer
/// comes from. [`FoldedNetwork::fold_params`] writes the folded parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedNetwork {
    layers: heapless::Vec<Layer, MAX_LAYERS>,
    outputs: heapless::Vec<usize, MAX_NODES>,
    /// Per folded layer: its layer in the original network and the batch-norm folded into it.
    source: heapless::Vec<(usize, Option<usize>), MAX_LAYERS>,
}

/// Which layers of `net` read node `node` (as input or as an add's other node).
fn readers(net: &Network<'_>, node: usize) -> usize {
    net.layers
        .iter()
        .filter(|l| l.input == node || matches!(l.op, LayerOp::Add { other } if other == node))
        .count()
}

impl FoldedNetwork {
    /// Folds the structure of `net` (checked by [`CompactPlan::new`] first).
    pub fn new(net: &Network<'_>) -> Result<Self, CompactError> {
        CompactPlan::new(*net)?;
        let mut folded = FoldedNetwork {
            layers: heapless::Vec::new(),
            outputs: heapless::Vec::new(),
            source: heapless::Vec::new(),
        };
        // map[v]: the folded node computing original node v.
        let mut map = [0usize; MAX_NODES];
        for (l, layer) in net.layers.iter().enumerate() {
            let src = layer.input;
            let foldable = matches!(layer.op, LayerOp::BatchNorm { .. })
                && src > 0
                && matches!(
                    net.layers[src - 1].op,
                    LayerOp::Conv2d { .. } | LayerOp::Linear { .. }
                )
                && readers(net, src) == 1
                && !net.outputs.contains(&src);
            if foldable {
                let j = map[src] - 1;
                folded.source[j].1 = Some(l);
                folded.layers[j].op = match folded.layers[j].op {
                    LayerOp::Conv2d {
                        out_channels,
                        window,
                        ..
                    } => LayerOp::Conv2d {
                        out_channels,
                        window,
                        bias: true,
                    },
                    LayerOp::Linear { out_features, .. } => LayerOp::Linear {
                        out_features,
                        bias: true,
                    },
                    op => op,
                };
                map[l + 1] = map[src];
                continue;
            }
            let op = match layer.op {
                LayerOp::Add { other } => LayerOp::Add { other: map[other] },
                op => op,
            };
            // Never more layers than the original's (checked above).
            let _ = folded.layers.push(Layer {
                op,
                input: map[src],
            });
            let _ = folded.source.push((l, None));
            map[l + 1] = folded.layers.len();
        }
        for &o in net.outputs {
            let _ = folded.outputs.push(map[o]);
        }
        Ok(folded)
    }

    /// The folded network, on `input` (the original network's input shape).
    pub fn network(&self, input: super::compact::MapShape) -> Network<'_> {
        Network {
            input,
            layers: &self.layers,
            outputs: &self.outputs,
        }
    }

    /// Whether any batch-norm was folded.
    pub fn folds(&self) -> bool {
        self.source.iter().any(|s| s.1.is_some())
    }

    /// Writes the folded parameters of `params` (the original network's, as `original` lays
    /// them out) into `out` (the folded network's length, as [`CompactPlan`] lays them out
    /// for [`FoldedNetwork::network`]).
    pub fn fold_params(
        &self,
        original: &CompactPlan<'_>,
        params: &[f32],
        out: &mut [f32],
    ) -> Result<(), CompactError> {
        let folded = CompactPlan::new(self.network(original.network().input))?;
        for (needed, provided, what) in [
            (original.params_len(), params.len(), "parameters"),
            (folded.params_len(), out.len(), "folded parameters"),
        ] {
            if needed != provided {
                return Err(CompactError::Buffer {
                    what,
                    needed,
                    provided,
                });
            }
        }
        for (j, &(l, bn)) in self.source.iter().enumerate() {
            let src = &params[original.param_range(l)];
            let dst = &mut out[folded.param_range(j)];
            let Some(bn) = bn else {
                dst.copy_from_slice(src);
                continue;
            };
            let LayerOp::BatchNorm { eps } = original.network().layers[bn].op else {
                continue;
            };
            let bnp = &params[original.param_range(bn)];
            let rows = bnp.len() / 4;
            let (gamma, rest) = bnp.split_at(rows);
            let (beta, rest) = rest.split_at(rows);
            let (mean, var) = rest.split_at(rows);
            let w_len = dst.len() - rows;
            let row = w_len / rows.max(1);
            let old_bias = (src.len() == w_len + rows).then(|| &src[w_len..]);
            let (w, b) = dst.split_at_mut(w_len);
            for o in 0..rows {
                let s = f64::from(gamma[o]) / libm::sqrt(f64::from(var[o]) + f64::from(eps));
                for (d, &v) in w[o * row..(o + 1) * row]
                    .iter_mut()
                    .zip(&src[o * row..(o + 1) * row])
                {
                    *d = (f64::from(v) * s) as f32;
                }
                let old = old_bias.map_or(0.0, |b| f64::from(b[o]));
                b[o] = ((old - f64::from(mean[o])) * s + f64::from(beta[o])) as f32;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::compact::{MapShape, Window};
    use super::*;

    #[test]
    fn a_batch_norm_after_a_conv_is_folded_into_its_weights_and_bias() {
        let window = Window {
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
        };
        let layers = [
            Layer {
                op: LayerOp::Conv2d {
                    out_channels: 2,
                    window,
                    bias: false,
                },
                input: 0,
            },
            Layer {
                op: LayerOp::BatchNorm { eps: 0.25 },
                input: 1,
            },
            Layer {
                op: LayerOp::Relu,
                input: 2,
            },
            // A batch-norm after a ReLU stays.
            Layer {
                op: LayerOp::BatchNorm { eps: 0.25 },
                input: 3,
            },
        ];
        let net = Network {
            input: MapShape::new(1, 2, 2),
            layers: &layers,
            outputs: &[4],
        };
        // Conv weights [2, -1]; the first batch-norm's gamma, beta, mean and var; the second's.
        let params = [
            2.0, -1.0, 3.0, 1.0, 1.0, 2.0, 0.5, -0.5, 0.75, 3.75, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0,
            0.75, 0.75,
        ];
        let folded = FoldedNetwork::new(&net).unwrap();
        let f = folded.network(net.input);
        assert!(folded.folds());
        assert_eq!(f.layers.len(), 3);
        assert_eq!(f.outputs, &[3]);
        assert_eq!(f.layers[1].input, 1);
        assert!(matches!(f.layers[0].op, LayerOp::Conv2d { bias: true, .. }));
        let original = CompactPlan::new(net).unwrap();
        let mut out = [f32::NAN; 2 + 2 + 8];
        folded.fold_params(&original, &params, &mut out).unwrap();
        // s = gamma / sqrt(var + eps) = [3 / 1, 1 / 2]; bias = (0 - mean) s + beta.
        assert_eq!(&out[..4], &[6.0, -0.5, -0.5, 2.25]);
        assert_eq!(&out[4..], &params[10..]);
        assert!(matches!(
            folded.fold_params(&original, &params[1..], &mut out),
            Err(CompactError::Buffer { .. })
        ));
    }
}
