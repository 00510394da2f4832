/*
 * pleas on a Cortex-M4F (QEMU mps2-an386), through the C API only:
 *
 * 1. Gram accumulation and ridge solve: samples with targets that are an exact linear map of
 *    them are streamed in small batches; the moments are solved for the weights, which must
 *    match the planted ones (the least-squares fit PLeaS does per merged layer).
 * 2. Auction: a similarity matrix with a planted matching must give that matching back, and
 *    an integer matrix must give the brute-force optimum (how PLeaS matches units).
 * 3. Top-k selection of the matched pairs, and error statuses on bad input.
 * 4. The real thing (mlp_merge.c): the whole merge of two trained MLPs on embedded images,
 *    and the accuracy of the merged network on embedded test images.
 * 5. The fashion CNN pair (cnn_eval.c) through the compact graph description: each model's
 *    accuracy on the embedded test images of its classes.
 * 6. The fashion CNN pair merged on the device (cnn_merge.c), and the merged network's
 *    accuracy on the embedded test images.
 *
 * Prints what it computes over semihosting and returns the number of failed checks, which
 * the startup code hands to QEMU as its exit code.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "demo.h"
#include "pleas.h"
#include "semihost.h"

/* Whether to evaluate the CNN pair too (run.sh: CNN=1, the default). */
#ifndef CNN_DEMO
#define CNN_DEMO 1
#endif

static int passed, failed;

void check(int ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        sh_printf("FAIL: %s\n", what);
    }
}

void check_status(pleas_status got, pleas_status want, const char *what) {
    if (got != want)
        sh_printf("FAIL: %s: %s, expected %s\n", what, pleas_status_name(got),
                  pleas_status_name(want));
    check(got == want, what);
}

/* A deterministic generator of floats in [-1, 1). */
static uint32_t seed = 2024u;
static float uniform(void) {
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / 8388608.0f - 1.0f;
}

/* ---- 1. Gram accumulation and ridge solve ------------------------------------------------ */

enum { D = 8, T = 3, N = 256, BATCH = 16, BLOCK = 32 };

/* State of the accumulator: sized by pleas_gram_state_size_f32 at run time, checked against
 * this static buffer (no heap). */
static double gram_state[4096];

static void gram_and_ridge(void) {
    static float w[T][D];
    for (int o = 0; o < T; o++)
        for (int i = 0; i < D; i++) w[o][i] = uniform();

    size_t len = 0;
    check_status(pleas_gram_state_size_f32(D, T, BLOCK, &len), PLEAS_SUCCESS, "state size");
    sh_printf("gram: dim %d, targets %d, blocks of %d samples: state %u doubles (%u bytes)\n",
              D, T, BLOCK, (unsigned)len, (unsigned)(len * sizeof(double)));
    check(len <= sizeof gram_state / sizeof gram_state[0], "state fits the static buffer");
    pleas_gram_instance_f32 g;
    check_status(pleas_gram_init_f32(&g, D, T, BLOCK, gram_state, len), PLEAS_SUCCESS, "init");

    /* Stream N samples in batches, as a sensor or a data loader would. The inputs have an
     * offset: the accumulator centres them internally. */
    for (int b = 0; b < N / BATCH; b++) {
        float x[BATCH][D], t[BATCH][T];
        for (int s = 0; s < BATCH; s++) {
            for (int i = 0; i < D; i++) x[s][i] = 2.0f + uniform();
            for (int o = 0; o < T; o++) {
                float acc = 0.0f;
                for (int i = 0; i < D; i++) acc += w[o][i] * x[s][i];
                t[s][o] = acc;
            }
        }
        check_status(pleas_gram_update_f32(&g, &x[0][0], &t[0][0], BATCH), PLEAS_SUCCESS,
                     "update");
    }
    /* A batch with a NaN is refused whole. */
    float bad_x[D] = {0}, bad_t[T] = {0};
    bad_x[3] = NAN;
    check_status(pleas_gram_update_f32(&g, bad_x, bad_t, 1), PLEAS_ERROR_NAN_INF, "NaN batch");
    check_status(pleas_gram_update_f32(&g, bad_x, NULL, 1), PLEAS_ERROR_ARGUMENT, "NULL t");
    uint64_t count = 0;
    check_status(pleas_gram_count_f32(&g, &count), PLEAS_SUCCESS, "count");
    check(count == N, "all samples counted, none of the refused batch");
    sh_printf("gram: %lu samples accumulated\n", (unsigned long)count);

    static double G[D * D], R[D * T], stt[T];
    check_status(pleas_gram_moments_f32(&g, G, R, stt), PLEAS_SUCCESS, "moments");
    pleas_normal_equations_f64 eqs = {D, T, G, R, stt};

    /* All inputs, all outputs: the planted weights come back. */
    size_t cols[D], outs[T];
    for (size_t i = 0; i < D; i++) cols[i] = i;
    for (size_t o = 0; o < T; o++) outs[o] = o;
    static double scratch[D * (D + T + 1)], W[T * D];
    size_t slen = 0;
    check_status(pleas_ridge_scratch_size_f64(D, T, &slen), PLEAS_SUCCESS, "ridge scratch");
    check(slen <= sizeof scratch / sizeof scratch[0], "ridge scratch fits");
    pleas_ridge_info info;
    check_status(pleas_ridge_solve_f64(&eqs, cols, D, outs, T, NULL, W, &info, scratch, slen),
                 PLEAS_SUCCESS, "ridge solve");
    double err = 0.0;
    for (int o = 0; o < T; o++)
        for (int i = 0; i < D; i++) err = fmax(err, fabs(W[o * D + i] - (double)w[o][i]));
    sh_printf("ridge: W[0] = [%.4f %.4f %.4f %.4f %.4f %.4f %.4f %.4f]\n", W[0], W[1], W[2],
              W[3], W[4], W[5], W[6], W[7]);
    sh_printf("ridge: max |W - W_true| = %.2e, relative residual %.2e, ridge %.2e, "
              "pivots %.3g..%.3g\n",
              err, info.relative_residual, info.ridge, info.min_pivot, info.max_pivot);
    check(err < 1e-3, "planted weights recovered");
    check(info.relative_residual < 1e-6, "exact fit");

    /* A sub-block (half the inputs, one output), as for one output block of a merged layer:
     * the fit is no longer exact. */
    size_t half[4] = {0, 2, 4, 6}, one[1] = {1};
    check_status(pleas_ridge_solve_f64(&eqs, half, 4, one, 1, NULL, W, &info, scratch, slen),
                 PLEAS_SUCCESS, "sub-block solve");
    sh_printf("ridge: inputs {0,2,4,6} -> output 1: relative residual %.3f\n",
              info.relative_residual);
    check(info.relative_residual > 0.01 && info.relative_residual < 1.0, "partial fit");
    size_t dup[2] = {2, 2};
    check_status(pleas_ridge_solve_f64(&eqs, dup, 2, one, 1, NULL, W, NULL, scratch, slen),
                 PLEAS_ERROR_INDEX, "repeated column");
}

/* ---- 2. Auction and top-k selection ------------------------------------------------------ */

enum { M = 8 };
static double auction_scratch[64 * M];

static void auction(void) {
    /* Unit i of model A matches unit planted[i] of model B; similarities are noisy. */
    static const size_t planted[M] = {3, 7, 0, 5, 1, 6, 2, 4};
    float s[M][M];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++)
            s[i][j] = 0.3f * (uniform() + 1.0f) / 2.0f + ((size_t)j == planted[i] ? 1.0f : 0.0f);

    size_t len = 0;
    check_status(pleas_auction_scratch_size_f32(M, M, &len), PLEAS_SUCCESS, "auction scratch");
    check(len <= sizeof auction_scratch / sizeof auction_scratch[0], "auction scratch fits");
    size_t perm[M];
    pleas_auction_info info;
    check_status(pleas_auction_f32(&s[0][0], M, M, NULL, perm, &info, auction_scratch, len),
                 PLEAS_SUCCESS, "auction");
    int same = 1;
    for (int i = 0; i < M; i++) same &= perm[i] == planted[i];
    sh_printf("auction: perm = [%u %u %u %u %u %u %u %u], %lu bids, %lu phases, gap <= %.1e\n",
              (unsigned)perm[0], (unsigned)perm[1], (unsigned)perm[2], (unsigned)perm[3],
              (unsigned)perm[4], (unsigned)perm[5], (unsigned)perm[6], (unsigned)perm[7],
              (unsigned long)info.bids, (unsigned long)info.phases, info.optimality_bound);
    check(same, "planted matching found");

    /* Keep the 5 best pairs (a partial merge): the 3 others stay unmerged. */
    size_t order[M];
    check_status(pleas_select_top_f32(&s[0][0], M, M, perm, 5, order), PLEAS_SUCCESS,
                 "select top");
    sh_printf("select: merged rows [%u %u %u %u %u], kept apart [%u %u %u]\n",
              (unsigned)order[0], (unsigned)order[1], (unsigned)order[2], (unsigned)order[3],
              (unsigned)order[4], (unsigned)order[5], (unsigned)order[6], (unsigned)order[7]);

    /* Integer scores are solved exactly: compare with all 720 assignments of a 6 x 6. */
    enum { K = 6 };
    float z[K][K];
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) z[i][j] = floorf(10.0f * uniform());
    check_status(pleas_auction_f32(&z[0][0], K, K, NULL, perm, &info, auction_scratch, len),
                 PLEAS_SUCCESS, "integer auction");
    float got = 0.0f, best = -1e30f;
    for (int i = 0; i < K; i++) got += z[i][perm[i]];
    int p[K] = {0, 1, 2, 3, 4, 5}, c[K] = {0};
    /* Heap's algorithm over all permutations. */
    for (int i = 0;;) {
        float total = 0.0f;
        for (int r = 0; r < K; r++) total += z[r][p[r]];
        best = total > best ? total : best;
        while (i < K && c[i] >= i) c[i++] = 0;
        if (i == K) break;
        int j = i % 2 ? c[i] : 0, tmp = p[j];
        p[j] = p[i];
        p[i] = tmp;
        c[i]++;
        i = 0;
    }
    sh_printf("auction: integer 6x6 total %.0f, brute-force optimum %.0f (integer mode %lu)\n",
              (double)got, (double)best, (unsigned long)info.integer);
    check(got == best && info.integer == 1, "integer optimum");

    s[2][5] = INFINITY;
    check_status(pleas_auction_f32(&s[0][0], M, M, NULL, perm, NULL, auction_scratch, len),
                 PLEAS_ERROR_NAN_INF, "infinite score");
    check_status(pleas_auction_f32(&s[0][0], M, M, NULL, perm, NULL, auction_scratch, len - 1),
                 PLEAS_ERROR_SCRATCH, "short scratch");
}

int main(void) {
    sh_write0("pleas firmware demo (Cortex-M4F, mps2-an386)\n");
    gram_and_ridge();
    auction();
    mlp_demo();
#if CNN_DEMO
    cnn_demo();
    cnn_merge_demo();
#endif
    sh_printf("firmware: %d passed, %d failed\n", passed, failed);
    return failed;
}
