/*
 * The C API from C: compiled with the host compiler against include/pleas.h and the host
 * static library (see run.sh). Prints one line per check and "N passed, N failed" at the end;
 * exits non-zero when a check fails.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pleas.h"

static int passed, failed;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (cond) {                                                                      \
            passed++;                                                                    \
        } else {                                                                         \
            failed++;                                                                    \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                     \
        }                                                                                \
    } while (0)

#define CHECK_STATUS(call, want)                                                         \
    do {                                                                                 \
        pleas_status got_ = (call);                                                      \
        if (got_ == (want)) {                                                            \
            passed++;                                                                    \
        } else {                                                                         \
            failed++;                                                                    \
            printf("FAIL %s:%d: %s = %s, want %s\n", __FILE__, __LINE__, #call,         \
                   pleas_status_name(got_), pleas_status_name(want));                    \
        }                                                                                \
    } while (0)

/* Planted linear targets t = W x for 4 features and 2 targets; Gram, then ridge. */
static void gram_then_ridge(void) {
    enum { D = 4, T = 2, N = 24 };
    static const float w[T][D] = {{0.5f, -1.0f, 2.0f, 0.25f}, {-0.75f, 0.0f, 1.5f, 1.0f}};
    static float x[N][D], t[N][T];
    unsigned seed = 12345u;
    for (int s = 0; s < N; s++) {
        for (int i = 0; i < D; i++) {
            seed = seed * 1103515245u + 12345u;
            x[s][i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
        }
        for (int o = 0; o < T; o++) {
            float acc = 0.0f;
            for (int i = 0; i < D; i++) acc += w[o][i] * x[s][i];
            t[s][o] = acc;
        }
    }

    size_t len = 0;
    CHECK_STATUS(pleas_gram_state_size_f32(D, T, 8, &len), PLEAS_SUCCESS);
    static double state[4096];
    CHECK(len > 0 && len <= sizeof state / sizeof state[0]);
    pleas_gram_instance_f32 g;
    CHECK_STATUS(pleas_gram_init_f32(&g, D, T, 8, state, len), PLEAS_SUCCESS);
    CHECK_STATUS(pleas_gram_init_f32(&g, D, T, 8, state, len - 1), PLEAS_ERROR_SCRATCH);
    CHECK_STATUS(pleas_gram_init_f32(&g, D, T, 8, state, len), PLEAS_SUCCESS);
    /* Three batches of 5, 0 and 19 samples. */
    CHECK_STATUS(pleas_gram_update_f32(&g, &x[0][0], &t[0][0], 5), PLEAS_SUCCESS);
    CHECK_STATUS(pleas_gram_update_f32(&g, NULL, NULL, 0), PLEAS_SUCCESS);
    CHECK_STATUS(pleas_gram_update_f32(&g, &x[5][0], &t[5][0], 19), PLEAS_SUCCESS);
    float bad[D] = {1.0f, NAN, 0.0f, 0.0f};
    float bad_t[T] = {0.0f, 0.0f};
    CHECK_STATUS(pleas_gram_update_f32(&g, bad, bad_t, 1), PLEAS_ERROR_NAN_INF);
    CHECK_STATUS(pleas_gram_update_f32(&g, bad, NULL, 1), PLEAS_ERROR_ARGUMENT);
    CHECK_STATUS(pleas_gram_update_f32(NULL, bad, bad_t, 1), PLEAS_ERROR_ARGUMENT);
    uint64_t count = 0;
    CHECK_STATUS(pleas_gram_count_f32(&g, &count), PLEAS_SUCCESS);
    CHECK(count == N);

    double G[D * D], R[D * T], stt[T];
    CHECK_STATUS(pleas_gram_moments_f32(&g, G, R, stt), PLEAS_SUCCESS);
    double g01 = 0.0;
    for (int s = 0; s < N; s++) g01 += (double)x[s][0] * (double)x[s][1];
    CHECK(fabs(G[0 * D + 1] - g01) < 1e-5 && G[0 * D + 1] == G[1 * D + 0]);

    pleas_normal_equations_f64 eqs = {D, T, G, R, stt};
    size_t cols[D] = {0, 1, 2, 3}, outs[T] = {0, 1};
    size_t slen = 0;
    CHECK_STATUS(pleas_ridge_scratch_size_f64(D, T, &slen), PLEAS_SUCCESS);
    double scratch[64], W[T * D];
    CHECK(slen <= 64);
    pleas_ridge_info info;
    CHECK_STATUS(pleas_ridge_solve_f64(&eqs, cols, D, outs, T, NULL, W, &info, scratch, slen),
                 PLEAS_SUCCESS);
    double err = 0.0;
    for (int o = 0; o < T; o++)
        for (int i = 0; i < D; i++) err = fmax(err, fabs(W[o * D + i] - w[o][i]));
    CHECK(err < 1e-3);
    CHECK(info.relative_residual < 1e-6 && info.retries == 0);
    size_t dup[2] = {1, 1};
    CHECK_STATUS(pleas_ridge_solve_f64(&eqs, dup, 2, outs, T, NULL, W, NULL, scratch, slen),
                 PLEAS_ERROR_INDEX);
    pleas_ridge_params p;
    CHECK_STATUS(pleas_ridge_params_init(&p), PLEAS_SUCCESS);
    p.relative_ridge = -1.0;
    CHECK_STATUS(pleas_ridge_solve_f64(&eqs, cols, D, outs, T, &p, W, NULL, scratch, slen),
                 PLEAS_ERROR_ARGUMENT);
    CHECK_STATUS(pleas_ridge_solve_f64(&eqs, cols, D, outs, T, NULL, W, NULL, scratch, slen - 1),
                 PLEAS_ERROR_SCRATCH);
    /* Weights written over the scratch. */
    CHECK_STATUS(pleas_ridge_solve_f64(&eqs, cols, D, outs, T, NULL, scratch, NULL, scratch, slen),
                 PLEAS_ERROR_ARGUMENT);
}

static void auction(void) {
    static const float s[3 * 4] = {0.1f, 0.9f, 0.3f, 0.0f, /**/ 0.8f, 0.7f, 0.1f, 0.2f,
                                   /**/ 0.4f, 0.6f, 0.2f, 0.5f};
    size_t len = 0;
    CHECK_STATUS(pleas_auction_scratch_size_f32(3, 4, &len), PLEAS_SUCCESS);
    CHECK_STATUS(pleas_auction_scratch_size_f32(4, 3, &len), PLEAS_ERROR_SIZE_MISMATCH);
    CHECK_STATUS(pleas_auction_scratch_size_f32(3, 4, &len), PLEAS_SUCCESS);
    double scratch[512];
    CHECK(len <= 512);
    size_t perm[3];
    pleas_auction_info info;
    CHECK_STATUS(pleas_auction_f32(s, 3, 4, NULL, perm, &info, scratch, len), PLEAS_SUCCESS);
    CHECK(perm[0] == 1 && perm[1] == 0 && perm[2] == 3);
    CHECK(info.optimality_bound < 1e-6);
    size_t order[3];
    CHECK_STATUS(pleas_select_top_f32(s, 3, 4, perm, 2, order), PLEAS_SUCCESS);
    CHECK(order[0] == 0 && order[1] == 1 && order[2] == 2);
    pleas_auction_params p;
    CHECK_STATUS(pleas_auction_params_init(&p), PLEAS_SUCCESS);
    p.scaling = 0.5;
    CHECK_STATUS(pleas_auction_f32(s, 3, 4, &p, perm, NULL, scratch, len), PLEAS_ERROR_ARGUMENT);
    CHECK_STATUS(pleas_auction_f32(s, 3, 4, NULL, perm, NULL, scratch, len - 1),
                 PLEAS_ERROR_SCRATCH);
    float inf[4] = {0.0f, INFINITY, 0.0f, 0.0f};
    CHECK_STATUS(pleas_auction_f32(inf, 2, 2, NULL, perm, NULL, scratch, len),
                 PLEAS_ERROR_NAN_INF);
}

int main(void) {
    CHECK(strcmp(pleas_status_name(PLEAS_ERROR_SINGULAR), "PLEAS_ERROR_SINGULAR") == 0);
    CHECK(strcmp(pleas_status_name(42), "PLEAS_STATUS_UNKNOWN") == 0);
    CHECK(sizeof(pleas_status) == 4);
    gram_then_ridge();
    auction();
    printf("capi-c: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
