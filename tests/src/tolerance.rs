//! The one table of tolerances used by the tests, each with the reason for its value.
//!
//! Sections belong to the algorithm families; every constant says why it has its value.

// --- Matrix products (GEMM, SYRK) and the Gram accumulator ---

/// Per-term relative error of an f32 dot product of length `k`, to be multiplied by `k + 2` and
/// by `sum |a_p b_p|` (plus `|beta c|`). The classic bound is `gamma_k = k u / (1 - k u)` with
/// unit roundoff `u = 2^-24` for *one* computation; the blocked kernel and the scalar twin each
/// carry it, in different summation orders, so their difference is bounded by `2 gamma_k`, i.e.
/// `k * 2^-23`. The `+ 2` covers the final `alpha *` and `+ beta c` roundings.
pub const F32_DOT_PER_TERM: f64 = f32::EPSILON as f64;

/// Relative Frobenius error allowed for the covariance of 1,000,000 samples of dimension 64
/// around a mean of 10, against an f64 sum: the acceptance figure of the Gram accumulator
/// (centring on a shift removes the factor 100 of cancellation; f32 blocks of 4096 samples then
/// leave about `sqrt(4096) * 2^-24 / sqrt(blocks)`, well below it).
pub const COVARIANCE_REL_FROBENIUS: f64 = 1e-6;

/// Relative error of uncentred Gram and cross moments read from the accumulator against an
/// f64 sum, for unit-scale data and blocks of at most a few thousand samples: f32 block
/// products carry `~ sqrt(block) * 2^-24` relative error per entry of the centred sums, and the
/// re-centring in f64 adds nothing measurable. `1e-5` leaves a margin of ~10 over `64 * 6e-8`.
pub const GRAM_MOMENTS_REL: f64 = 1e-5;

/// Bound, as a multiple of the entries' scale, on how far an accumulator combined from shards
/// with different shifts may drift from one accumulator over the same samples: the move between
/// shifts is exact algebra done in f64 (`~1e-16` relative), and the two runs' f32 block sums
/// differ by the block rounding of `GRAM_MOMENTS_REL`.
pub const GRAM_COMBINE_REL: f64 = 1e-5;

/// Relative error of similarities computed from streamed f32-block moments against a direct
/// f64 computation over the activations: the moments carry `GRAM_MOMENTS_REL`; neg-l2 takes a
/// square root (halving relative error) and correlation divides by two such quantities, so
/// 1e-4 of the entry scale leaves a margin for units with small variance.
pub const SIMILARITY_REL: f64 = 1e-4;

// --- Cholesky, triangular solves, ridge least squares ---

/// Backward error of a Cholesky factor: `|A - L L^T|_ij <= CHOLESKY_BACKWARD * (n + 1) *
/// sqrt(a_ii a_jj)`. The classic bound is `|A - L L^T| <= gamma_{n+1} |L| |L^T|` with
/// `gamma_m ~ m u`, `u = eps / 2`, and `(|L| |L^T|)_ij <= ||L_i|| ||L_j|| ~ sqrt(a_ii a_jj)`;
/// `2 eps` (four times `u`) leaves room for the square roots and the blocked summation order.
/// It does not depend on the condition number, so it is checked on every matrix.
pub const CHOLESKY_BACKWARD: f64 = 2.0 * f64::EPSILON;

/// Forward agreement of two Cholesky factors of the same matrix (blocked kernel, scalar twin,
/// nalgebra): `||L1 - L2||_F <= CHOLESKY_FACTOR * n * eps * cond(A) * ||L||_F`. Both are exact
/// factors of `A + E_k` with `||E_k|| <~ (n + 1) u ||A||`, and a perturbation `dA` moves the
/// factor by at most `~ cond(A) ||dA|| / (sqrt(2) ||A||)` relative (Sun's first-order bound), so
/// `2 (n + 1) u cond / sqrt(2) <~ n eps cond`; the factor 2 covers `n = 1` and the `+ 1`.
pub const CHOLESKY_FACTOR: f64 = 2.0;

/// How far the reported failing pivot may be from the one built into the matrix, relative to
/// the largest eigenvalue (1) of the well-conditioned (`cond <= 10`) leading block: the pivot is
/// a Schur complement computed with `~ n u cond` relative error, far below `1e-10` for
/// `n <= 129`. In the ridge tests the expected pivot is `pivot + lambda`; the ridge
/// (`1e-12 x` the mean diagonal) also changes the Schur complement by `~ lambda cond`, a few
/// `1e-12`, still inside.
pub const FAILING_PIVOT_ABS: f64 = 1e-10;

/// Backward (residual) error of a triangular solve, per right-hand side:
/// `||L x - b|| <= TRIANGULAR_RESIDUAL * n * eps * ||L||_F ||x||`. Substitution is backward
/// stable, `(L + dL) x = b` with `|dL| <= gamma_n |L|` (`gamma_n ~ n u`); the Frobenius norm
/// bounds `|| |L| ||_2`, and 2 covers the fused and unfused summation orders.
pub const TRIANGULAR_RESIDUAL: f64 = 2.0;

/// Forward agreement of two triangular solves (SIMD kernel, scalar twin, nalgebra), per
/// right-hand side: `||x1 - x2|| <= TRIANGULAR_FORWARD * n * eps * cond(L) * ||x||`. Each
/// solution carries a forward error `<= cond(L) gamma_n ||x||` from the backward bound above, so
/// the difference of two carries twice that, i.e. `n eps cond` with `u = eps / 2`; the extra
/// factor 2 is margin (the bound is rarely approached for random right-hand sides).
pub const TRIANGULAR_FORWARD: f64 = 2.0;

/// Agreement of the ridge solve with an SVD oracle, the solver's share, per target `o`:
/// `gamma / sigma_min * (N_G ||w|| + N_R)` with `gamma = RIDGE_FORWARD * (k + samples) * eps`,
/// `sigma_min` the smallest singular value of `G_cc + lambda I`,
/// `N_G = || |X_c|^T |X_c| + lambda I ||_2` and `N_R = || |X_c|^T |t_o| ||` (for a Gram given
/// directly and a refined oracle: `N_G = ||G_cc + lambda I||`, `N_R = 0` as `R` is exact,
/// `samples = 0`). Forming
/// `G = X^T X` and `R = X^T T` perturbs them by `<= samples u |X|^T |X|` and
/// `<= samples u |X|^T |T|` elementwise, and the Cholesky solve is backward stable with a
/// perturbation `~ k u |L| |L^T|` of the matrix; each perturbation moves `w` by itself over
/// `sigma_min`. 4 covers both triangular solves and the factorization.
pub const RIDGE_FORWARD: f64 = 4.0;

/// The oracle's share of the ridge comparisons, as a multiple of `eps ||w||`. The oracle is
/// an SVD solve of the square ridge system refined with double-precision residuals
/// (`oracle::refined_svd_solve`), which leaves `~ eps ||w||` of its own error whatever the
/// conditioning; a raw SVD solve (backward stable, so off by up to `~ 40 p eps cond ||w||` on
/// small systems by Wedin's bound) made the comparison depend on the oracle, not the solver.
pub const SVD_REFINED: f64 = 8.0;

/// Agreement of the ridge solve with the same steps done by the scalar twins (Cholesky and
/// triangular references on `G_cc + lambda I`), per target, relative to `||w||`: the two differ
/// only in summation order and fused multiply-adds, so by `~ k eps cond` as in `RIDGE_FORWARD`
/// without the sample term.
pub const RIDGE_VS_TWINS: f64 = 4.0;

/// Residual computed from the sums against the residual of the samples, per target:
/// `|r_sums - r_samples| <= RIDGE_RESIDUAL * (k + samples) * eps * (t^T t + 2 |w|^T |R_c,o| +
/// |w|^T |G_cc| |w|)`. Each of the three terms of `t^T t - 2 w^T r + w^T G w` is a sum of
/// `<= k` products of entries that are themselves sums of `samples` products, so each carries
/// `~ (k + samples) u` times its magnitude sum; the direct residual adds `~ k u` per sample.
/// 4 covers the three terms and both computations.
pub const RIDGE_RESIDUAL: f64 = 4.0;

/// Agreement of reported pivots (`L[j, j]^2`) with nalgebra's, relative to the largest pivot:
/// `|p1 - p2| <= PIVOT_AGREEMENT * n * eps * cond * max_pivot`. A pivot is the square of a
/// factor entry, so it carries twice the factor's relative error of `CHOLESKY_FACTOR`
/// (`2 n eps cond`), hence `2 * 2`.
pub const PIVOT_AGREEMENT: f64 = 4.0;

/// Relative agreement of the reported ridge with `relative * mean(diag) + absolute` computed
/// by the test: the two means sum `k <= 129` terms in different ways (the solver divides each
/// term by `k` first), `~ k eps ~ 3e-14`; retries multiply by 10 exactly-rounded at most a few
/// times. `1e-12` leaves a margin of 30.
pub const RIDGE_VALUE_REL: f64 = 1e-12;

/// An exact linear relation (200 Gaussian samples, 6 inputs, default ridge `1e-6 x` the mean
/// diagonal): each weight moves by the ridge's shrinkage `lambda / (s + lambda)` of its
/// eigen-direction, below `~1e-5` relative since the smallest eigenvalue of such a Gram is
/// well above a tenth of the mean, so weights of size `<= 3` move by `< 1e-4`...
pub const EXACT_FIT_WEIGHT_ABS: f64 = 1e-4;

/// ...and the relative residual is the square of that shrinkage, `< 1e-10`.
pub const EXACT_FIT_RESIDUAL: f64 = 1e-10;

// --- Auction ---

/// Relative tolerance of the auction's total on real scores, as a fraction of
/// `n * (max s - min s)`: the documented default contract (`AuctionParams::rel_tol`).
pub const AUCTION_REL_TOL: f64 = 1e-9;

/// Extra slack, relative to `n * max|s|`, for comparing two f64 totals of `n <= 300` terms
/// summed in different orders or by different solvers: each sum carries about `n * 2^-53` of
/// its terms' magnitude; `1e-12` covers that with a margin of ~30 at n = 300.
pub const AUCTION_SUM_REL: f64 = 1e-12;

// --- Models and forward pass ---

/// Permutation invariance: max |logits(permuted) - logits(original)| divided by max |logits|.
/// Permuting units only reorders the terms of each dot product, so the two runs differ by f32
/// summation-order rounding: about sqrt(K) * 2^-24 relative per layer for K-term sums, compounded
/// over <= 50 layers of ResNet-50 (observed: < 1e-5); 1e-4 is the acceptance bound.
pub const PERMUTATION_INVARIANCE_REL: f32 = 1e-4;

/// Batch-norm folding: max |logits(folded) - logits(unfolded)| / max |logits|. Folding rounds the
/// scaled weights to f32 once per layer (2^-24 relative) and changes the order of the affine
/// map; the same compounding argument as above bounds it well below 1e-4.
pub const BN_FOLD_REL: f32 = 1e-4;

/// Fixture accuracies: a test sample whose top-2 logit margin is below this counts as a near tie
/// whose prediction may differ from PyTorch's. Our logits agree with an f64 NumPy reference to
/// ~1e-5 (ResNet-20), while PyTorch's own conv algorithms (Winograd / TF32 on GPU) carry errors
/// of ~1e-4..1e-3 relative on logits of magnitude ~5; a margin of 2e-3 covers that. The test
/// allows the correct count to differ from the metadata's by at most the number of near ties.
pub const NEAR_TIE_LOGIT_MARGIN: f32 = 2e-3;

/// Layer kernels against their naive twins (conv as direct 7-deep loops, pooling, linear):
/// relative to the max |output|; f32 sums of up to a few hundred terms in another order.
pub const KERNEL_VS_NAIVE_REL: f32 = 1e-5;

/// A whole small network (conv, batch-norm, ReLU, conv, residual add, pooling, linear) through
/// the kernels against the naive f64 twin, relative to the max |logit|: every layer's f32 sums
/// (up to `5 x 5 x 3 = 75` and `3 x 3 x 8 = 72` terms) err by up to `terms x eps` of the sum of
/// their terms' magnitudes, and the errors of about four layers add up; a logit that is a
/// difference of larger terms sees them relative to itself. Measured worst over random
/// geometries: 1.67e-5 (c = 3, 7 x 5 map, 5 x 5 kernel), so four layers of `75 eps` with
/// margin.
pub const NET_VS_NAIVE_REL: f32 = 4e-5;

/// A scalar f64 twin (rounded once to f32) against nalgebra's f64 product of the same f32
/// values, relative to the max |output|: both are exact to f64 rounding except the twin's final
/// rounding to f32, half an f32 ulp of the value.
pub const TWIN_VS_NALGEBRA_REL: f64 = f32::EPSILON as f64;

/// A block-structured conv or linear layer against the dense layer whose weight is zero outside
/// the blocks, relative to the max |output|: both sum the same non-zero f32 products (the dense
/// one adds exact zeros, which change nothing), grouped differently (one GEMM per input range,
/// accumulated into the block's rows, against one GEMM over all inputs). Their difference is
/// summation-order rounding of at most a few hundred terms, as for `KERNEL_VS_NAIVE_REL`.
pub const BLOCK_VS_DENSE_REL: f32 = 1e-5;

// --- Merged-layer least-squares fits ---

/// Slack on a layer loss computed from sums (`t^T t - 2 w^T R + w^T G w`), relative to the
/// targets' energy `sum t^2`: the three terms are each about that energy and carry the
/// relative error of f32-block moments (`~1e-7`, `GRAM_MOMENTS_REL` is the bound), so their
/// difference is known to about 1e-7 of the energy; 1e-6 leaves a margin of 10. An exact fit
/// (nothing merged) therefore shows a loss of "0" as anything below this.
pub const FIT_LOSS_REL: f64 = 1e-6;

/// The blocked symmetric product `W G` (and the layer loss built on it) against its scalar
/// twin and nalgebra, per entry relative to `sum_i |w_i| |g_ij|`: f64 sums of `d` products in
/// different orders (four-lane partial sums against one running sum) each carry at most
/// `d u` of that sum (`u = 2^-53`); `d <= 300` in the tests, so `2 * 300 * 1.1e-16 = 7e-14`,
/// rounded up to 1e-12 for the loss's three-term difference.
pub const SYMM_PRODUCT_REL: f64 = 1e-12;

// --- Whole merges ---

/// Exact merges (a model with a permuted copy of itself at budget 1.0, any pair at 2.0):
/// max |merged logits - expected logits| / max |expected logits|. The merged network recomputes
/// every layer from least-squares weights solved in f64 from f32-block moments with a relative
/// ridge of 1e-6, so each layer carries ~1e-6 relative error, compounded over ~20 layers of
/// ResNet-20; docs/ALGORITHM.md section 6 and the issue bound it by 1e-3 of the logit scale.
pub const MERGE_LOGIT_REL: f32 = 1e-3;

/// Budget 2.0 with the ridge towards the permute-and-average weights: every block reads exact
/// copies of its model's units and keeps its copied weights without a solve, so the merged
/// network differs from the models only by f32 rounding (folded batch-norm, a shared head's
/// halved weights, the blocked kernels' summation order). Measured up to 9e-7 of the logit
/// scale on ResNet-20 and 4e-8 on tiny MLPs; 1e-5 leaves a margin of 10. A solve of any block
/// (1.4e-3 on a tiny rank-deficient MLP) fails it. The rounding is relative to the terms of
/// each sum, not to the logits: a random tiny MLP whose logits cancel down to 3e-4 of their
/// terms showed 1.5e-5 (the `whole_merge` fuzz target checks copies by their reports instead,
/// and logits against `MERGE_LOGIT_REL`).
pub const MERGE_COPY_LOGIT_REL: f32 = 1e-5;

/// Re-estimated batch-norm statistics against an independent f64 pass over the same merge
/// data: means relative to the channel's standard deviation, variances relative to
/// themselves. Both sides sum the same f32 activations in f64, in different orders (Chan's
/// combination per chunk vs one running sum); the f32 activations themselves agree exactly
/// (same forward pass), so 1e-6 only covers the variance's cancellation in the test's
/// `E[x^2] - mean^2`.
pub const BN_STATISTICS_REL: f64 = 1e-6;

// --- Packed storage and the dual (sample-space) ridge solve ---

/// Agreement of the dual ridge solve with an f64 oracle (nalgebra's SVD of the samples, or the
/// primal Cholesky solve of the Gram), on the update `W - W0`:
/// `||dW - dW_ref||_F <= DUAL_FORWARD (N + k) eps (||X|| (||K|| ||Z|| + ||X|| ||W0||) /
/// lambda_min(K) + ||X|| ||Z||)` with the kernel `K = X X^T + lambda I` and `Z = K^{-1} E`.
/// The kernel and `E = T - X W0^T` are sums of `k` products (relative error `~ k u` of
/// `|X| |X^T|` and of `|X| |W0^T|`), the packed Cholesky solve adds a backward error
/// `~ N u ||K||`; each moves `Z` by itself over `lambda_min(K)`, and `X^T Z` sums `N` products
/// more. The oracles carry errors of the same form (an SVD is backward stable with
/// `~ max(N, k) u ||X||`), hence 8 = 4 (as `RIDGE_FORWARD`) for each side.
pub const DUAL_FORWARD: f64 = 8.0;

/// The primal oracle's own share when compared with the dual solve:
/// `DUAL_FORWARD (N + k) eps (||G + lambda I|| ||dW|| + ||X|| ||E||) / lambda_min(G + lambda I)`,
/// the forward error of a Cholesky solve of the regularised Gram (whose condition number is
/// `~ ||G|| / lambda` when `k > N`) with right-hand sides `X^T E` formed in f64.
pub const PRIMAL_SHARE: f64 = DUAL_FORWARD;

/// The dual's reported residual `lambda^2 ||Z||^2 / ||T||^2` against `||X W^T - T||^2 / ||T||^2`
/// computed directly, relative to `(||X|| ||W|| + ||T||)^2 / ||T||^2`: the direct residual
/// cancels `X W^T` against `T`, which leaves `~ (k + N) u (||X|| ||W|| + ||T||)` per entry, and
/// the reported one carries the error of `Z`; 4 (as `RIDGE_RESIDUAL`) times `(N + k) eps` covers
/// both, times the cancellation factor that the bound already contains.
pub const DUAL_RESIDUAL: f64 = 4.0;

// --- The heap-free MLP merge of the core against the host pipeline ---

/// Matching scores (total and mean merged similarity per group) and ridges (relative ridge
/// times a Gram's mean diagonal) of the core against the host, relative. The host sums f32
/// block products of centred activations (`GRAM_MOMENTS_REL` bounds their error by 1e-5 of
/// the entries' scale, typically ~1e-7); the core sums f64 products. Scores and mean
/// diagonals are sums of such entries, so their relative error stays near 1e-7 (measured on
/// the 784-64-64 pair: 1.4e-8 for scores, 1e-8 for ridges).
pub const MLP_HOST_MOMENTS_REL: f64 = 1e-6;

/// Weights and biases of every layer after the first (relative Frobenius norm), core against
/// host. Each is solved from moments the host carries to f32-block rounding (~1e-7),
/// amplified by the condition number of the block's regularised system (up to ~1e4 for heads
/// reading 129 partly redundant units), and from inputs that inherit the first layer's
/// agreement on the samples. Measured on the 784-64-64 pair at 300 samples: up to 5.3e-4; the
/// host differs from itself by up to 6.2e-4 between batch sizes 64, 32 and 7 (which change
/// only its f32 rounding).
pub const MLP_HOST_WEIGHTS_REL: f64 = 2e-3;

/// The first layer's weights in the span of the merge samples (with the bias column), core
/// against host, relative to the host's weights: where the samples determine the fit, both
/// are the same solution up to the host's moment rounding amplified by the span's
/// conditioning. Measured 1.6e-5 (the host against itself at another batch size: 1.9e-5).
pub const MLP_HOST_SPAN_REL: f64 = 1e-4;

/// The first layer's weights outside the span of the merge samples, core against host,
/// relative to the host's weights. Both solve in sample space (more columns than samples), so
/// these directions keep the prior (permute-and-average) weights up to rounding of the
/// update `X^T Z`. Measured 2.7e-8. (Before the host solved such layers in sample space, its
/// f32 Gram's rounding divided by the ridge moved them by 0.4-0.6 of the weights' norm.)
pub const MLP_HOST_NULL_REL: f64 = 1e-6;

/// The first layer's outputs on the merge samples, core against host, relative: both fit the
/// targets exactly (more columns than samples), up to the ridge's shrinkage (1e-6) and the
/// host's f32 moments. Measured 5e-7.
pub const MLP_HOST_SAMPLE_OUTPUT_REL: f64 = 1e-5;

/// Exact merges of the core (budget 2.0 against both models, a model with a permuted copy of
/// itself at 1.0): max |merged logits - model logits| / max |model logits|. Each layer is
/// the model's own layer plus a ridge update in the samples' span that fits rounding-level
/// residuals (targets and `W0 x` differ by f32 rounding), stored in f32: ~1e-7 per layer,
/// three layers deep, seen through logits that cancel (max |logit| against the differences
/// of 64-term sums). Measured on the 784-64-64 pair: 7.6e-6 (budget 2.0), 7.4e-6 (self-merge).
pub const MLP_CORE_EXACT_LOGIT_REL: f32 = 1e-4;

/// The core's primal and dual forms against each other (relative Frobenius norm per layer):
/// the same problem solved in f64 two ways, `~ (N + k) eps cond` apart (cond up to ~1e8 for
/// the primal 785 x 785 Gram of 300 samples with a relative ridge of 1e-6, so ~1e-5 at worst
/// before rounding), then rounded to f32 (6e-8) and propagated through the sequential layers.
/// Measured on the 784-64-64 pair: the primal first layer rounds to the same f32 weights as
/// the dual one; dual everywhere against primal elsewhere, up to 3e-7.
pub const MLP_FORMS_REL: f64 = 1e-5;

/// A PyTorch-run model against the same weights run by `pleas`: max |logits difference| /
/// max |logits|. The two sum each dot product in different orders (PyTorch's CPU convolutions
/// use blocked GEMMs), about sqrt(K) * 2^-24 relative per layer, compounded over the ~20 layers
/// of a ResNet-18 (observed on the tiny fixture: see tests/tests/torch_checkpoint.rs); 1e-4
/// leaves an order of magnitude of room, as [`PERMUTATION_INVARIANCE_REL`].
pub const TORCH_LOGIT_REL: f32 = 1e-4;

/// Relative difference (`max |a - b| / max |a|`) between the compact forward pass (one sample
/// at a time, `forward::compact`) and the batched graph forward pass on the same network: the
/// same kernels and f32 arithmetic, but a GEMM over one sample's columns against one over a
/// chunk of samples may block the `k` sums differently (a few roundings of `2^-24` per layer,
/// amplified by at most the depth of the small test networks).
pub const COMPACT_FORWARD_REL: f32 = 1e-5;

/// The core CNN merge against the host's (`tests/tests/cnn_merge_core.rs`): assignment
/// scores, whose moments are f64 sums of the compact forward pass's activations on the device
/// and f32 blocks of the batched forward pass folded into f64 on the host.
pub const CNN_HOST_SCORE_REL: f64 = 1e-5;

/// The core CNN merge's weights against the host's, per layer in Frobenius norm: the fits
/// read Grams summed differently (f64 per position on the device; f32 blocks, and lag
/// moments for stride-1 layers, on the host) from activations of differently blocked f32
/// kernels, and later layers see the earlier layers' differences. Measured on `cnn_split` at
/// budgets 1.0 and 1.2 with 200 samples: at most 3.4e-5.
pub const CNN_HOST_WEIGHTS_REL: f64 = 2e-4;

/// A CNN merged by the core with a copy of itself whose channels are permuted, at budget 1.0
/// (every pair merged): the merged network's logits against the model's, relative to their
/// scale. The fits are exact up to the ridge (`1e-6` of each block's mean Gram diagonal) and
/// f32 rounding of five layers; measured 7.3e-7 (`pooled_cnn`, 40 samples).
pub const CNN_SELF_MERGE_LOGIT_REL: f32 = 1e-5;
