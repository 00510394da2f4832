//! Least-squares fit of a merged layer (docs/ALGORITHM.md sections 4 and 6): with nothing merged the
//! fit reproduces both models exactly; the fitted loss is never above permute-and-average's, nor
//! above any other weights with the same block structure.

use pleas::par::OwnedGram;
use pleas_core::gram::GramParams;
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::linalg::{symm_rows, symm_rows_reference};
use pleas_core::lstsq::{NormalEquations, RidgeParams};
use pleas_core::merge::blocks::{InputSide, output_blocks};
use pleas_core::merge::fit::{
    dense_weights, fit_layer, layer_loss, layer_loss_reference, layer_loss_scratch_len,
};
use pleas_core::merge::layout::GroupLayout;
use pleas_tests::rng::Rng;
use pleas_tests::tolerance::{FIT_LOSS_REL, SYMM_PRODUCT_REL};

/// The blocked layer loss, checked against its scalar twin.
fn loss_of(eqs: NormalEquations<'_>, w: &[f64], t: usize) -> f64 {
    let d = eqs.gram.rows();
    let mut scratch = vec![0.0; layer_loss_scratch_len(d, t)];
    let loss = layer_loss(eqs, w, t, &mut scratch).unwrap();
    let twin = layer_loss_reference(eqs, w, t).unwrap();
    let energy: f64 = eqs.target_sq_sums.iter().sum();
    assert!(
        (loss - twin).abs() <= SYMM_PRODUCT_REL * energy.max(twin.abs()),
        "blocked loss {loss} vs scalar twin {twin}"
    );
    loss
}

/// Two linear layers `v = W u + b` of models A and B on related inputs.
struct Pair {
    ua: Vec<Vec<f32>>,
    ub: Vec<Vec<f32>>,
    wa: Vec<Vec<f32>>,
    ba: Vec<f32>,
    wb: Vec<Vec<f32>>,
    bb: Vec<f32>,
    perm_in: Vec<usize>,
    perm_out: Vec<usize>,
}

fn apply(w: &[Vec<f32>], b: &[f32], u: &[f32]) -> Vec<f32> {
    w.iter()
        .zip(b)
        .map(|(row, bias)| row.iter().zip(u).map(|(x, y)| x * y).sum::<f32>() + bias)
        .collect()
}

fn pair(n_in: usize, n_out: usize, samples: usize, seed: u64) -> Pair {
    let mut rng = Rng::new(seed);
    let perm_in = rng.permutation(n_in);
    let perm_out = rng.permutation(n_out);
    let ua: Vec<Vec<f32>> = (0..samples)
        .map(|_| (0..n_in).map(|_| rng.normal_f32().max(0.0)).collect())
        .collect();
    // B's unit perm_in[i] carries (a noisy copy of) A's unit i.
    let ub = ua
        .iter()
        .map(|u| {
            let mut v = vec![0.0; n_in];
            for i in 0..n_in {
                v[perm_in[i]] = u[i] + 0.3 * rng.normal_f32().max(0.0);
            }
            v
        })
        .collect();
    let mat = |rng: &mut Rng| -> Vec<Vec<f32>> {
        (0..n_out)
            .map(|_| (0..n_in).map(|_| rng.normal_f32()).collect())
            .collect()
    };
    let wa = mat(&mut rng);
    let wb = mat(&mut rng);
    let ba = (0..n_out).map(|_| rng.normal_f32()).collect();
    let bb = (0..n_out).map(|_| rng.normal_f32()).collect();
    Pair {
        ua,
        ub,
        wa,
        ba,
        wb,
        bb,
        perm_in,
        perm_out,
    }
}

/// The sums of one layer in the merged layouts; returns (gram, cross, sum t^2, columns, outputs).
fn sums(
    p: &Pair,
    lin: &GroupLayout,
    lout: &GroupLayout,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, usize, usize) {
    let (d, t) = (lin.merged_width() + 1, lout.merged_width());
    let mut acc = OwnedGram::new_owned(d, t, GramParams::default());
    for (ua, ub) in p.ua.iter().zip(&p.ub) {
        let mut x = vec![0.0f32; d];
        lin.apply(ua, ub, &mut x[..d - 1]).unwrap();
        x[d - 1] = 1.0;
        let va = apply(&p.wa, &p.ba, ua);
        let vb = apply(&p.wb, &p.bb, ub);
        let mut y = vec![0.0f32; t];
        lout.apply(&va, &vb, &mut y).unwrap();
        acc.push(
            MatRef::new(&x, 1, d).unwrap(),
            Some(MatRef::new(&y, 1, t).unwrap()),
        )
        .unwrap();
    }
    let mut g = vec![0.0; d * d];
    let mut r = vec![0.0; d * t];
    let mut tt = vec![0.0; t];
    acc.write_gram(MatMut::new(&mut g, d, d).unwrap()).unwrap();
    acc.write_cross(MatMut::new(&mut r, d, t).unwrap()).unwrap();
    acc.write_sum_tt(&mut tt).unwrap();
    (g, r, tt, d, t)
}

/// A fitted layer: its loss, the targets' energy, the dense weights and the sums.
struct Fitted {
    loss: f64,
    energy: f64,
    w: Vec<f64>,
    d: usize,
    t: usize,
    g: Vec<f64>,
    r: Vec<f64>,
    tt: Vec<f64>,
}

fn fitted(p: &Pair, lin: &GroupLayout, lout: &GroupLayout) -> Fitted {
    let (g, r, tt, d, t) = sums(p, lin, lout);
    let eqs = NormalEquations {
        gram: MatRef::new(&g, d, d).unwrap(),
        cross: MatRef::new(&r, d, t).unwrap(),
        target_sq_sums: &tt,
    };
    let side = InputSide {
        layout: Some(lin),
        channels: 0,
        patch: 1,
        bias: true,
    };
    let blocks = output_blocks(side, Some(lout), 0);
    let fits = fit_layer(eqs, &blocks, RidgeParams::default()).unwrap();
    let w = dense_weights(&fits, t, d);
    let loss = loss_of(eqs, &w, t);
    let energy: f64 = tt.iter().sum();
    Fitted {
        loss,
        energy,
        w,
        d,
        t,
        g,
        r,
        tt,
    }
}

#[test]
fn nothing_merged_reproduces_both_layers() {
    let p = pair(6, 5, 300, 1);
    let lin = GroupLayout::new(&p.perm_in, &[]).unwrap();
    let lout = GroupLayout::new(&p.perm_out, &[]).unwrap();
    let Fitted {
        loss, energy, w, d, ..
    } = fitted(&p, &lin, &lout);
    assert!(loss <= FIT_LOSS_REL * energy, "loss {loss} of {energy}");
    // Row of A-only output unit a (slot a) reads A-only inputs: W_A[a][a'] and the bias.
    let slots_in = lin.slots_a();
    for (s, &a) in lout.a_only_units().iter().enumerate() {
        let row = &w[(lout.a_offset() + s) * d..(lout.a_offset() + s + 1) * d];
        for a_in in 0..6 {
            let got = row[slots_in[a_in]];
            assert!(
                (got - f64::from(p.wa[a][a_in])).abs() < 1e-3,
                "{got} vs {}",
                p.wa[a][a_in]
            );
        }
        assert!((row[d - 1] - f64::from(p.ba[a])).abs() < 1e-3);
        // Cross block: B-only inputs are exactly zero.
        for s_in in lin.b_offset()..lin.merged_width() {
            assert_eq!(row[s_in], 0.0);
        }
    }
}

#[test]
fn fit_is_never_worse_than_permute_and_average_or_other_block_weights() {
    for seed in 0..6 {
        let p = pair(7, 6, 400, 10 + seed);
        // Fully merged: the permute-and-average weights are well defined.
        let all_in: Vec<usize> = (0..7).collect();
        let all_out: Vec<usize> = (0..6).collect();
        let lin = GroupLayout::new(&p.perm_in, &all_in).unwrap();
        let lout = GroupLayout::new(&p.perm_out, &all_out).unwrap();
        let Fitted {
            loss,
            energy,
            w,
            d,
            t,
            g,
            r,
            tt,
        } = fitted(&p, &lin, &lout);
        let mut pa = vec![0.0f64; t * d];
        for (m, (a, b)) in lout.pairs().enumerate() {
            for (mi, (ai, bi)) in lin.pairs().enumerate() {
                pa[m * d + mi] = 0.5 * f64::from(p.wa[a][ai] + p.wb[b][bi]);
            }
            pa[m * d + d - 1] = 0.5 * f64::from(p.ba[a] + p.bb[b]);
        }
        let eqs = NormalEquations {
            gram: MatRef::new(&g, d, d).unwrap(),
            cross: MatRef::new(&r, d, t).unwrap(),
            target_sq_sums: &tt,
        };
        let pa_loss = loss_of(eqs, &pa, t);
        assert!(
            loss <= pa_loss + FIT_LOSS_REL * energy,
            "seed {seed}: LS {loss} vs P&A {pa_loss}"
        );
        // Any perturbation of the fitted weights costs more (the fit is the minimum, up to
        // the tiny ridge).
        let mut rng = Rng::new(seed);
        for _ in 0..5 {
            let nudged: Vec<f64> = w.iter().map(|v| v + 0.01 * rng.normal()).collect();
            let nl = loss_of(eqs, &nudged, t);
            assert!(
                loss <= nl + FIT_LOSS_REL * energy,
                "seed {seed}: {loss} vs nudged {nl}"
            );
        }
    }
}

/// A block whose inputs are all zero on the data (dead units, no bias) has a zero Gram block,
/// where the relative ridge is zero too: it is fitted with zero weights instead of failing as
/// "not positive definite" (found by fuzzing the whole merge, `fuzz/fuzz_targets/whole_merge.rs`).
#[test]
fn a_block_reading_only_zero_inputs_gets_zero_weights() {
    // Inputs 0 and 1 vary; inputs 2 and 3 are always 0. Targets: t0 = x0 + 2 x1, t1 = 0.
    let d = 4;
    let mut rng = Rng::new(7);
    let (mut g, mut r, mut tt) = (vec![0.0; d * d], vec![0.0; d * 2], vec![0.0; 2]);
    for _ in 0..50 {
        let x = [rng.normal(), rng.normal(), 0.0, 0.0];
        let t = [x[0] + 2.0 * x[1], 0.0];
        for i in 0..d {
            for j in 0..d {
                g[i * d + j] += x[i] * x[j];
            }
            for o in 0..2 {
                r[i * 2 + o] += x[i] * t[o];
            }
        }
        for o in 0..2 {
            tt[o] += t[o] * t[o];
        }
    }
    let eqs = NormalEquations {
        gram: MatRef::new(&g, d, d).unwrap(),
        cross: MatRef::new(&r, d, 2).unwrap(),
        target_sq_sums: &tt,
    };
    let blocks = [
        pleas_core::merge::blocks::OutputBlock {
            rows: 0..1,
            cols: vec![0, 1],
        },
        pleas_core::merge::blocks::OutputBlock {
            rows: 1..2,
            cols: vec![2, 3],
        },
    ];
    let fits = fit_layer(eqs, &blocks, RidgeParams::default()).unwrap();
    assert!((fits[0].weights[0] - 1.0).abs() < 1e-4 && (fits[0].weights[1] - 2.0).abs() < 1e-4);
    assert_eq!(fits[1].weights, vec![0.0, 0.0]);
    assert_eq!(fits[1].info.ridge, 1.0);
    // An explicit absolute ridge is the caller's choice and is used as given.
    let params = RidgeParams::default().with_absolute_ridge(0.5);
    let fits = fit_layer(eqs, &blocks[1..], params).unwrap();
    assert_eq!(
        (fits[0].weights.clone(), fits[0].info.ridge),
        (vec![0.0, 0.0], 0.5)
    );
}

/// `W G` from the Gram's lower triangle: the blocked kernel against its scalar twin and
/// nalgebra's f64 product of the full symmetric matrix, on odd sizes (row blocks of four with a
/// remainder, four-lane loops with tails), weights with zero entries, and the upper triangle
/// filled with garbage that must not be read; the loss from the product against its twin.
#[test]
fn symmetric_product_and_loss_match_their_twins_and_nalgebra() {
    let mut rng = Rng::new(41);
    for &(n, d) in &[(1, 1), (3, 5), (4, 8), (7, 33), (9, 130), (13, 297)] {
        let x: Vec<f64> = (0..d * (d + 3)).map(|_| rng.normal()).collect();
        let xm = nalgebra::DMatrix::from_row_slice(d + 3, d, &x);
        let full = xm.transpose() * &xm;
        let mut lower = vec![f64::NAN; d * d];
        for i in 0..d {
            for j in 0..=i {
                lower[i * d + j] = full[(i, j)];
            }
        }
        let w: Vec<f64> = (0..n * d)
            .map(|k| if k % 5 == 2 { 0.0 } else { rng.normal() })
            .collect();
        let (mut got, mut twin) = (vec![0.0; n * d], vec![0.0; n * d]);
        let lv = MatRef::new(&lower, d, d).unwrap();
        let wv = MatRef::new(&w, n, d).unwrap();
        symm_rows(lv, wv, MatMut::new(&mut got, n, d).unwrap()).unwrap();
        symm_rows_reference(lv, wv, MatMut::new(&mut twin, n, d).unwrap()).unwrap();
        let want = nalgebra::DMatrix::from_row_slice(n, d, &w) * &full;
        for o in 0..n {
            for j in 0..d {
                let scale: f64 = (0..d).map(|i| (w[o * d + i] * full[(i, j)]).abs()).sum();
                let tol = SYMM_PRODUCT_REL * scale.max(f64::MIN_POSITIVE);
                let g = got[o * d + j];
                assert!((g - twin[o * d + j]).abs() <= tol, "{n}x{d} ({o},{j}) twin");
                assert!(
                    (g - want[(o, j)]).abs() <= tol,
                    "{n}x{d} ({o},{j}) nalgebra"
                );
            }
        }
        // The loss of these weights against random targets.
        let r: Vec<f64> = (0..d * n).map(|_| rng.normal()).collect();
        let tt: Vec<f64> = (0..n).map(|_| 10.0 + rng.normal().abs()).collect();
        let eqs = NormalEquations {
            gram: lv,
            cross: MatRef::new(&r, d, n).unwrap(),
            target_sq_sums: &tt,
        };
        loss_of(eqs, &w, n);
    }
}

#[test]
fn layer_loss_rejects_short_scratch_and_wrong_lengths() {
    let g = [1.0, 0.0, 0.5, 2.0];
    let r = [1.0, 1.0];
    let tt = [1.0];
    let eqs = NormalEquations {
        gram: MatRef::new(&g, 2, 2).unwrap(),
        cross: MatRef::new(&r, 2, 1).unwrap(),
        target_sq_sums: &tt,
    };
    let mut short = [0.0; 1];
    assert!(matches!(
        layer_loss(eqs, &[1.0, 1.0], 1, &mut short),
        Err(pleas_core::merge::fit::FitError::ScratchTooSmall {
            needed: 2,
            provided: 1
        })
    ));
    let mut scratch = [0.0; 2];
    assert!(matches!(
        layer_loss(eqs, &[1.0], 1, &mut scratch),
        Err(pleas_core::merge::fit::FitError::WeightsLength {
            expected: 2,
            found: 1
        })
    ));
}
