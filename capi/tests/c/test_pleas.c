/*
 * The C API from C: compiled with the host compiler against include/pleas.h and the host
 * static library (see run.sh). Prints one line per check and "N passed, N failed" at the end;
 * exits non-zero when a check fails.
 */
#include <math.h>
#include <stdint.h>
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

/* The whole-MLP merge on a model and a copy of it with permuted hidden units (shared label
 * space, budget 1.0): the units are matched back and the merged network computes the model's
 * logits. Byte samples through a table give the merge of the mapped f32 samples, bit for bit. */
enum { MI = 3, MH = 4, MC = 2, MN = 16 };

static void mlp_forward(const float *w0, const float *b0, const float *w1, const float *b1,
                        size_t hidden, const float *x, float *logits) {
    float h[2 * MH];
    for (size_t j = 0; j < hidden; j++) {
        float acc = 0.0f;
        for (int i = 0; i < MI; i++) acc += w0[j * MI + i] * x[i];
        acc += b0[j];
        h[j] = acc > 0.0f ? acc : 0.0f;
    }
    for (int o = 0; o < MC; o++) {
        float acc = 0.0f;
        for (size_t j = 0; j < hidden; j++) acc += w1[o * hidden + j] * h[j];
        logits[o] = acc + b1[o];
    }
}

static void mlp_merge(void) {
    static const size_t perm[MH] = {2, 0, 3, 1};
    float aw0[MH * MI], ab0[MH], aw1[MC * MH], ab1[MC];
    float bw0[MH * MI], bb0[MH], bw1[MC * MH], bb1[MC];
    unsigned seed = 777u;
#define NEXT() (seed = seed * 1103515245u + 12345u, (float)((seed >> 8) % 2001) / 1000.0f - 1.0f)
    for (int k = 0; k < MH * MI; k++) aw0[k] = NEXT();
    for (int k = 0; k < MH; k++) ab0[k] = 0.2f * NEXT();
    for (int k = 0; k < MC * MH; k++) aw1[k] = NEXT();
    for (int k = 0; k < MC; k++) ab1[k] = 0.2f * NEXT();
    for (int j = 0; j < MH; j++) {
        for (int i = 0; i < MI; i++) bw0[j * MI + i] = aw0[perm[j] * MI + i];
        bb0[j] = ab0[perm[j]];
        for (int o = 0; o < MC; o++) bw1[o * MH + j] = aw1[o * MH + perm[j]];
    }
    for (int o = 0; o < MC; o++) bb1[o] = ab1[o];
    uint8_t bytes[MN * MI];
    float table[256], x[MN * MI];
    for (int v = 0; v < 256; v++) table[v] = (float)v / 255.0f * 2.0f - 1.0f;
    for (int k = 0; k < MN * MI; k++) {
        seed = seed * 1103515245u + 12345u;
        bytes[k] = (uint8_t)(seed >> 16);
        x[k] = table[bytes[k]];
    }
#undef NEXT

    pleas_mlp_dims dims = {MI, 1, {MH}, MC, 1, PLEAS_MLP_HEADS_SHARED};
    pleas_mlp_model_f32 a = {{{aw0, ab0}, {aw1, ab1}}}, b = {{{bw0, bb0}, {bw1, bb1}}};
    pleas_mlp_merge_plan plan;
    CHECK_STATUS(pleas_mlp_merge_plan_f32(&dims, MN, 1.0, NULL, &plan), PLEAS_SUCCESS);
    CHECK(plan.merged_widths[0] == MH && plan.fitted_layers == 2);
    CHECK(plan.output_len == MH * MI + MH + MC * MH + MC);
    static float merged[64], merged_u8[64];
    static double scratch[4096];
    static size_t indices[64];
    CHECK(plan.output_len <= 64 && plan.scratch_len <= 4096 && plan.index_len <= 64);
    pleas_mlp_merge_info info;
    CHECK_STATUS(pleas_mlp_merge_f32(&dims, &a, &b, x, MN, 1.0, NULL, merged, plan.output_len,
                                     &info, scratch, plan.scratch_len, indices,
                                     plan.index_len),
                 PLEAS_SUCCESS);
    CHECK(info.groups[0].merged == MH && info.layers[0].copied_blocks == 1);
    CHECK(info.layers[1].primal_blocks == 1 && info.layers[1].copied_blocks == 0);
    float worst = 0.0f;
    for (int s = 0; s < MN; s++) {
        float want[MC], got[MC];
        mlp_forward(aw0, ab0, aw1, ab1, MH, &x[s * MI], want);
        mlp_forward(&merged[plan.weight_offset[0]], &merged[plan.bias_offset[0]],
                    &merged[plan.weight_offset[1]], &merged[plan.bias_offset[1]], MH,
                    &x[s * MI], got);
        for (int o = 0; o < MC; o++) worst = fmaxf(worst, fabsf(got[o] - want[o]));
    }
    CHECK(worst < 1e-3f);
    CHECK_STATUS(pleas_mlp_merge_u8(&dims, &a, &b, bytes, MN, table, 1.0, NULL, merged_u8,
                                    plan.output_len, NULL, scratch, plan.scratch_len, indices,
                                    plan.index_len),
                 PLEAS_SUCCESS);
    CHECK(memcmp(merged, merged_u8, plan.output_len * sizeof(float)) == 0);
    CHECK_STATUS(pleas_mlp_merge_f32(&dims, &a, &b, x, MN, 1.0, NULL, merged, plan.output_len,
                                     NULL, scratch, plan.scratch_len - 1, indices,
                                     plan.index_len),
                 PLEAS_ERROR_SCRATCH);
    CHECK_STATUS(pleas_mlp_merge_plan_f32(&dims, MN, 2.5, NULL, &plan), PLEAS_ERROR_ARGUMENT);
    dims.bias = 0;
    CHECK_STATUS(pleas_mlp_merge_plan_f32(&dims, MN, 1.0, NULL, &plan), PLEAS_SUCCESS);
    CHECK_STATUS(pleas_mlp_merge_f32(&dims, &a, &b, x, MN, 1.0, NULL, merged, plan.output_len,
                                     NULL, scratch, plan.scratch_len, indices, plan.index_len),
                 PLEAS_ERROR_SIZE_MISMATCH);
}

/* A CNN merged with a copy of itself whose conv channels are permuted: the merged network
 * (budget 1.0, one shared head) computes the model's logits. */
#define CC 4 /* conv channels */
#define CK 3 /* classes */
#define CN 12 /* merge samples */
#define CS 6 /* input side */
static void cnn_merge(void) {
    static const size_t perm[CC] = {3, 1, 0, 2};
    /* conv weight 4x1x3x3, bias 4, head weight 3x4, bias 3. */
    enum { CONV_W = CC * 9, PARAMS = CONV_W + CC + CK * CC + CK };
    float pa[PARAMS], pb[PARAMS];
    unsigned seed = 4242u;
#define NEXT() (seed = seed * 1103515245u + 12345u, (float)((seed >> 8) % 2001) / 1000.0f - 1.0f)
    for (int k = 0; k < PARAMS; k++) pa[k] = NEXT();
    for (int j = 0; j < CC; j++) {
        for (int t = 0; t < 9; t++) pb[j * 9 + t] = pa[perm[j] * 9 + t];
        pb[CONV_W + j] = pa[CONV_W + perm[j]];
        for (int o = 0; o < CK; o++)
            pb[CONV_W + CC + o * CC + j] = pa[CONV_W + CC + o * CC + perm[j]];
    }
    for (int o = 0; o < CK; o++) pb[CONV_W + CC + CK * CC + o] = pa[CONV_W + CC + CK * CC + o];
    uint8_t bytes[CN * CS * CS];
    float table[256], x[CN * CS * CS];
    for (int v = 0; v < 256; v++) table[v] = (float)v / 255.0f * 2.0f - 1.0f;
    for (int k = 0; k < CN * CS * CS; k++) {
        seed = seed * 1103515245u + 12345u;
        bytes[k] = (uint8_t)(seed >> 16);
        x[k] = table[bytes[k]];
    }
#undef NEXT
    pleas_cnn_layer layers[4] = {{0}};
    layers[0].op = PLEAS_CNN_OP_CONV2D;
    layers[0].out = CC;
    layers[0].kernel[0] = layers[0].kernel[1] = 3;
    layers[0].stride[0] = layers[0].stride[1] = 1;
    layers[0].padding[0] = layers[0].padding[1] = 1;
    layers[0].bias = 1;
    layers[1].op = PLEAS_CNN_OP_RELU;
    layers[1].input = 1;
    layers[2].op = PLEAS_CNN_OP_GLOBAL_AVGPOOL;
    layers[2].input = 2;
    layers[3].op = PLEAS_CNN_OP_LINEAR;
    layers[3].input = 3;
    layers[3].out = CK;
    layers[3].bias = 1;
    size_t outputs[1] = {4};
    pleas_cnn_graph g = {1, CS, CS, layers, 4, outputs, 1};
    static pleas_cnn_merge_plan plan;
    CHECK_STATUS(pleas_cnn_merge_plan_f32(&g, PLEAS_MLP_HEADS_SHARED, CN, 1.0, NULL, &plan),
                 PLEAS_SUCCESS);
    CHECK(plan.groups == 1 && plan.merged_pairs[0] == CC && plan.merged_output_count == 1);
    static float merged[256], merged_u8[256], forward[4096];
    static double scratch[8192];
    static size_t indices[64];
    CHECK(plan.output_len <= 256 && plan.scratch_len <= 8192 && plan.forward_len <= 4096 &&
          plan.index_len <= 64);
    static pleas_cnn_merge_info info;
    CHECK_STATUS(pleas_cnn_merge_f32(&g, pa, PARAMS, pb, PARAMS, x, CN, PLEAS_MLP_HEADS_SHARED,
                                     1.0, NULL, merged, plan.output_len, &info, scratch,
                                     plan.scratch_len, forward, plan.forward_len, indices,
                                     plan.index_len),
                 PLEAS_SUCCESS);
    CHECK(info.layers[0].copied_blocks == 1 && info.layers[1].primal_blocks == 1);
    pleas_cnn_graph mg = {1,           CS, CS, plan.merged_layers, plan.merged_layer_count,
                          plan.merged_outputs, plan.merged_output_count};
    pleas_cnn_forward_plan fp;
    CHECK_STATUS(pleas_cnn_forward_plan_f32(&mg, &fp), PLEAS_SUCCESS);
    CHECK(fp.params_len == plan.output_len && fp.output_len == CK && fp.scratch_len <= 4096);
    float worst = 0.0f;
    static float fsc[4096];
    for (int s = 0; s < CN; s++) {
        float want[CK], got[CK];
        CHECK_STATUS(pleas_cnn_forward_f32(&g, pa, PARAMS, &x[s * CS * CS], CS * CS, want, CK,
                                           fsc, fp.scratch_len),
                     PLEAS_SUCCESS);
        CHECK_STATUS(pleas_cnn_forward_f32(&mg, merged, plan.output_len, &x[s * CS * CS],
                                           CS * CS, got, CK, fsc, fp.scratch_len),
                     PLEAS_SUCCESS);
        for (int o = 0; o < CK; o++) worst = fmaxf(worst, fabsf(got[o] - want[o]));
    }
    CHECK(worst < 1e-3f);
    CHECK_STATUS(pleas_cnn_merge_u8(&g, pa, PARAMS, pb, PARAMS, bytes, CN, table,
                                    PLEAS_MLP_HEADS_SHARED, 1.0, NULL, merged_u8,
                                    plan.output_len, NULL, scratch, plan.scratch_len, forward,
                                    plan.forward_len, indices, plan.index_len),
                 PLEAS_SUCCESS);
    CHECK(memcmp(merged, merged_u8, plan.output_len * sizeof(float)) == 0);
    CHECK_STATUS(pleas_cnn_merge_f32(&g, pa, PARAMS, pb, PARAMS, x, CN, PLEAS_MLP_HEADS_SHARED,
                                     1.0, NULL, merged, plan.output_len, NULL, scratch,
                                     plan.scratch_len, forward, plan.forward_len - 1, indices,
                                     plan.index_len),
                 PLEAS_ERROR_SCRATCH);
    CHECK_STATUS(pleas_cnn_merge_f32(&g, pa, PARAMS - 1, pb, PARAMS, x, CN,
                                     PLEAS_MLP_HEADS_SHARED, 1.0, NULL, merged, plan.output_len,
                                     NULL, scratch, plan.scratch_len, forward, plan.forward_len,
                                     indices, plan.index_len),
                 PLEAS_ERROR_SIZE_MISMATCH);
}

int main(void) {
    CHECK(strcmp(pleas_status_name(PLEAS_ERROR_SINGULAR), "PLEAS_ERROR_SINGULAR") == 0);
    CHECK(strcmp(pleas_status_name(42), "PLEAS_STATUS_UNKNOWN") == 0);
    CHECK(sizeof(pleas_status) == 4);
    gram_then_ridge();
    auction();
    mlp_merge();
    cnn_merge();
    printf("capi-c: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
