/*
 * The real PLeaS merge on the device, through pleas.h only: the two fashion MLPs of
 * tests/fixtures/fashion/mlp64_split (784-64-64; A's head knows classes 0-4, B's classes 5-9)
 * are merged on embedded Fashion-MNIST images at each budget of MERGE_BUDGETS, and the merged
 * network is evaluated on embedded test images (head a on the images of classes 0-4, head b
 * on those of classes 5-9), as `pleas eval` scores it on the host.
 *
 * What the merge reads stays in flash: the weights (const arrays), the merge images (bytes,
 * read through a 256-entry table computed here in f32 as the host normalises them,
 * x / 255 * 2 - 1), the test images. RAM holds the merged network, the f64 scratch and the
 * index scratch, in .bss with the lengths the host planned at build time for the largest
 * budget (mlp_plan.h, from host/host_merge.c), and the stack.
 */
#include <stdint.h>
#include <string.h>

#include "demo.h"
#include "mlp64_split.h"
#include "mlp_dims.h"
#include "mlp_hash.h"
#include "mlp_plan.h"
#include "semihost.h"

#ifndef MERGE_BUDGETS
#define MERGE_BUDGETS 1.2
#endif
/* What the ridge pulls towards: PLEAS_MLP_RIDGE_TOWARD_AVERAGE (the default: the first layer,
 * which reads the images both models share, keeps its permute-and-average weights, its exact
 * fit) or PLEAS_MLP_RIDGE_TOWARD_ZERO (every layer is solved; the first in sample space). */
#ifndef MERGE_RIDGE_TOWARD
#define MERGE_RIDGE_TOWARD PLEAS_MLP_RIDGE_TOWARD_AVERAGE
#endif

enum {
    INPUTS = DATA_X_MATCH_DIM1,
    HIDDEN = A_LAYERS_0_WEIGHT_DIM0,
    CLASSES = A_HEAD_WEIGHT_DIM0,
    TEST_N = DATA_X_TEST_DIM0,
    /* The widest merged layer: every unit of both models kept. */
    MAX_WIDTH = 2 * HIDDEN,
};

const uint8_t *const demo_test_images = data_x_test;
const uint8_t *const demo_test_labels = data_y_test;
const size_t demo_test_count = TEST_N;

static float merged[MLP_MERGED_LEN];
static double scratch[MLP_SCRATCH_LEN];
static size_t indices[MLP_INDEX_LEN];
static float table[256];

static const double budgets[] = {MERGE_BUDGETS};
static pleas_mlp_merge_params params;

static const pleas_mlp_dims dims = MLP_DIMS_INIT;
static const pleas_mlp_model_f32 model_a = MLP_MODEL_A_INIT;
static const pleas_mlp_model_f32 model_b = MLP_MODEL_B_INIT;

/* ---- RAM accounting: stack high-water mark, scratch high-water mark ---------------------- */

/* Linker script symbols: the stack reserve is [_heap_limit, _estack). */
extern uint32_t _heap_limit[], _estack[];
extern char _sram[], _sdata[], _ebss[];
#define PAINT 0xA5A5A5A5u

/* Paints the free stack below the caller's frame (down to the stack reserve's bottom). */
__attribute__((noinline)) void paint_stack(void) {
    volatile uint32_t *p = _heap_limit;
    uint32_t *sp = (uint32_t *)__builtin_frame_address(0) - 64;
    while (p < sp) *p++ = PAINT;
}

/* Bytes of stack ever used since paint_stack(). */
size_t stack_used(void) {
    const uint32_t *p = _heap_limit;
    while (p < _estack && *p == PAINT) p++;
    return (size_t)((const char *)_estack - (const char *)p);
}

/* A NaN no computation produces, to see how much of the scratch the merge wrote. */
static const uint64_t CANARY = 0x7FF4DEADBEEFCAFEull;

static void fill_canary(size_t len) {
    for (size_t i = 0; i < len; i++) memcpy(&scratch[i], &CANARY, sizeof CANARY);
}

static size_t scratch_high_water(size_t len) {
    while (len > 0 && memcmp(&scratch[len - 1], &CANARY, sizeof CANARY) == 0) len--;
    return len;
}

/* ---- Evaluation -------------------------------------------------------------------------- */

/* Logits of head `head` of the merged network for test image `img`, in f32 (products summed
 * in order, then the bias, as the core's and the host's forward passes). */
static void logits(const pleas_mlp_merge_plan *p, const uint8_t *img, size_t head, float *out) {
    static float act[2][MAX_WIDTH];
    const float *in = NULL;
    for (size_t l = 0; l <= p->hidden_layers; l++) {
        size_t f = l < p->hidden_layers ? l : l + head;
        size_t rows = p->layer_outputs[f], cols = p->layer_inputs[f];
        const float *w = &merged[p->weight_offset[f]], *b = &merged[p->bias_offset[f]];
        float *y = l < p->hidden_layers ? act[l % 2] : out;
        for (size_t o = 0; o < rows; o++) {
            const float *row = &w[o * cols];
            float acc = 0.0f;
            if (l == 0) {
                for (size_t j = 0; j < cols; j++) acc += row[j] * table[img[j]];
            } else {
                for (size_t j = 0; j < cols; j++) acc += row[j] * in[j];
            }
            acc += b[o];
            y[o] = l < p->hidden_layers && acc < 0.0f ? 0.0f : acc;
        }
        in = y;
    }
}

/* Per-task accuracy: head a on the test images of classes 0-4, head b on classes 5-9 (label
 * mapped to 0-4); the prediction is the first unit of maximal logit. */
static void evaluate(const pleas_mlp_merge_plan *p, size_t correct[2], size_t seen[2]) {
    correct[0] = correct[1] = seen[0] = seen[1] = 0;
    for (size_t i = 0; i < TEST_N; i++) {
        size_t label = data_y_test[i], head = label / CLASSES, unit = label % CLASSES;
        float z[CLASSES];
        logits(p, &data_x_test[i * INPUTS], head, z);
        size_t best = 0;
        for (size_t j = 1; j < CLASSES; j++)
            if (z[j] > z[best]) best = j;
        seen[head]++;
        correct[head] += best == unit;
    }
}

/* ---- The merge --------------------------------------------------------------------------- */

static void merge_at(double budget) {
    pleas_mlp_merge_plan plan;
    pleas_status s = pleas_mlp_merge_plan_f32(&dims, MLP_MERGE_SAMPLES, budget, &params, &plan);
    check_status(s, PLEAS_SUCCESS, "mlp plan");
    if (s != PLEAS_SUCCESS) return;
    sh_printf("plan budget %.2f: merged widths %u %u (%u + %u pairs merged), flop ratio %.4f\n",
              budget, (unsigned)plan.merged_widths[0], (unsigned)plan.merged_widths[1],
              (unsigned)plan.merged_pairs[0], (unsigned)plan.merged_pairs[1], plan.flop_ratio);
    sh_printf("plan budget %.2f: merged %u floats (%u B), scratch %u doubles (%u B), indices "
              "%u (%u B)\n",
              budget, (unsigned)plan.output_len, (unsigned)(plan.output_len * sizeof(float)),
              (unsigned)plan.scratch_len, (unsigned)(plan.scratch_len * sizeof(double)),
              (unsigned)plan.index_len, (unsigned)(plan.index_len * sizeof(size_t)));
    int fits = plan.output_len <= MLP_MERGED_LEN && plan.scratch_len <= MLP_SCRATCH_LEN &&
               plan.index_len <= MLP_INDEX_LEN;
    check(fits, "the plan fits the buffers sized at build time");
    if (!fits) return;

    fill_canary(MLP_SCRATCH_LEN);
    pleas_mlp_merge_info info;
    long t0 = sh_clock();
    s = pleas_mlp_merge_u8(&dims, &model_a, &model_b, data_x_match, MLP_MERGE_SAMPLES, table,
                           budget, &params, merged, plan.output_len, &info, scratch,
                           plan.scratch_len, indices, plan.index_len);
    long t1 = sh_clock();
    check_status(s, PLEAS_SUCCESS, "mlp merge");
    if (s != PLEAS_SUCCESS) return;
    /* The line run.sh compares with the same merge by the host build of the C API. */
    uint64_t hash = mlp_hash(merged, plan.output_len);
    sh_printf("merged budget %.2f: %u floats, fnv1a 0x%08lx%08lx\n", budget,
              (unsigned)plan.output_len, (unsigned long)(hash >> 32),
              (unsigned long)(hash & 0xffffffffu));
    size_t used = scratch_high_water(MLP_SCRATCH_LEN);
    sh_printf("merge budget %.2f: %s in %.1f s; scratch written %u of %u doubles (peak %u B)\n",
              budget, pleas_status_name(s), (double)(t1 - t0) / 100.0, (unsigned)used,
              (unsigned)plan.scratch_len, (unsigned)(used * sizeof(double)));
    check(used <= plan.scratch_len, "the merge stays within its planned scratch");
    /* The first layer: a copy with the ridge towards the permute-and-average weights; else
     * solved from INPUTS + 1 columns (the bias), in sample space when there are fewer samples
     * (the kernel is then the smaller system), else primal. */
    size_t copy0 = MERGE_RIDGE_TOWARD == PLEAS_MLP_RIDGE_TOWARD_AVERAGE;
    size_t dual0 = !copy0 && INPUTS + 1 > MLP_MERGE_SAMPLES;
    int form0 = info.layers[0].copied_blocks == copy0 && info.layers[0].dual_blocks == dual0 &&
                info.layers[0].primal_blocks == (size_t)(!copy0 && !dual0);
    for (size_t f = 0; f < plan.fitted_layers; f++) {
        const pleas_mlp_layer_info *l = &info.layers[f];
        sh_printf("merge budget %.2f: layer %u (%s): %u copied + %u dual + %u primal blocks, "
                  "ridge %.3e, %u retries\n",
                  budget, (unsigned)f,
                  f < plan.hidden_layers ? "hidden" : (f == plan.hidden_layers ? "head a" : "head b"),
                  (unsigned)l->copied_blocks, (unsigned)l->dual_blocks,
                  (unsigned)l->primal_blocks, l->ridge, (unsigned)l->retries);
    }
    check(form0, copy0 ? "first layer copied (ridge towards the average)"
                       : "first layer in sample space exactly when it has more columns than "
                         "samples");
    for (size_t g = 0; g < plan.hidden_layers; g++)
        sh_printf("merge budget %.2f: group %u: %u of %u pairs merged, mean score %.4f, "
                  "%lu bids\n",
                  budget, (unsigned)g, (unsigned)info.groups[g].merged,
                  (unsigned)info.groups[g].width, info.groups[g].mean_merged_score,
                  (unsigned long)info.groups[g].auction.bids);

    size_t correct[2], seen[2];
    t0 = sh_clock();
    evaluate(&plan, correct, seen);
    t1 = sh_clock();
    double acc_a = (double)correct[0] / (double)seen[0];
    double acc_b = (double)correct[1] / (double)seen[1];
    sh_printf("eval budget %.2f: %u test images in %.1f s\n", budget,
              (unsigned)(seen[0] + seen[1]), (double)(t1 - t0) / 100.0);
    /* The line host_reference.py compares with the host's `pleas eval`. */
    sh_printf("accuracy budget %.2f: a %.4f b %.4f mean %.4f (%u/%u, %u/%u)\n", budget, acc_a,
              acc_b, (acc_a + acc_b) / 2.0, (unsigned)correct[0], (unsigned)seen[0],
              (unsigned)correct[1], (unsigned)seen[1]);
    check(acc_a > 0.8 && acc_b > 0.8, "merged accuracy above 0.8 on both tasks");
}

void mlp_demo(void) {
    paint_stack();
    check_status(pleas_mlp_merge_params_init(&params), PLEAS_SUCCESS, "merge params");
    params.ridge_toward = MERGE_RIDGE_TOWARD;
    /* The host's normalisation of the fixtures' images, in f32. */
    for (int v = 0; v < 256; v++) table[v] = (float)v / 255.0f * 2.0f - 1.0f;
    sh_printf("mlp merge: two %d-%d-%d MLPs (heads: classes 0-4, 5-9), %d merge images and "
              "%d test images (bytes in flash); ridge towards %s\n",
              INPUTS, HIDDEN, HIDDEN, (int)MLP_MERGE_SAMPLES, (int)TEST_N,
              MERGE_RIDGE_TOWARD == PLEAS_MLP_RIDGE_TOWARD_ZERO ? "zero" : "the average");

    /* Refusals first: they fail before anything is computed. */
    pleas_mlp_merge_plan plan;
    check_status(pleas_mlp_merge_plan_f32(&dims, MLP_MERGE_SAMPLES, 2.5, NULL, &plan),
                 PLEAS_ERROR_ARGUMENT, "budget above 2");
    check_status(pleas_mlp_merge_u8(&dims, &model_a, &model_b, data_x_match, MLP_MERGE_SAMPLES,
                                    table, 1.2, NULL, merged, MLP_MERGED_LEN, NULL, scratch, 16,
                                    indices, MLP_INDEX_LEN),
                 PLEAS_ERROR_SCRATCH, "short scratch");
    check_status(pleas_mlp_merge_u8(&dims, &model_a, &model_b, data_x_match, MLP_MERGE_SAMPLES,
                                    NULL, 1.2, NULL, merged, MLP_MERGED_LEN, NULL, scratch,
                                    MLP_SCRATCH_LEN, indices, MLP_INDEX_LEN),
                 PLEAS_ERROR_ARGUMENT, "no table");

    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) merge_at(budgets[i]);

    size_t static_ram = (size_t)(_ebss - _sdata);
    size_t reserve = (size_t)((char *)_estack - (char *)_heap_limit);
    sh_printf("RAM: .data + .bss %u B (merged %u, scratch %u, indices %u), heap %u B, stack "
              "%u B used of %u reserved; limit %u B\n",
              (unsigned)static_ram, (unsigned)sizeof merged, (unsigned)sizeof scratch,
              (unsigned)sizeof indices, (unsigned)heap_used(), (unsigned)stack_used(),
              (unsigned)reserve, (unsigned)((char *)_estack - _sram));
    check(stack_used() < reserve, "the stack stayed within its reserve");
}
