/*
 * The fashion CNN pair merged on the device (pleas_cnn_merge_u8): at each budget of
 * CNN_MERGE_BUDGETS, the two models (parameters in flash, batch-norm unfolded: the merge folds
 * it as `pleas merge --bn fold` does) are merged on the embedded CNN merge images (bytes in
 * flash, read through the normalisation table), then the merged network (two heads: classes
 * 0-4 and 5-9) is evaluated on the embedded test images through pleas_cnn_forward_u8 with the
 * merged graph of the plan. Prints per budget the merged parameters' hash (compared by run.sh
 * with the host build of the C API, host/cnn_sizes.c), the time and peak scratch, and the
 * accuracies (compared by host_reference.py with `pleas merge` + `pleas eval`).
 *
 * The buffers are .bss sized at build time by host/cnn_sizes.c (cnn_plan.h, the largest of the
 * plans at these budgets); the device checks its own plans against them.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cnn_graph.h"
#include "cnn_plan.h"
#include "demo.h"
#include "mlp_hash.h"
#include "semihost.h"

#ifndef CNN_MERGE_BUDGETS
#define CNN_MERGE_BUDGETS 1.0, 1.2
#endif

enum { PIXELS = 28 * 28, CLASSES = 5 };

/* Linker script symbols: the stack reserve is [_heap_limit, _estack). */
extern uint32_t _heap_limit[], _estack[];
#define STACK_RESERVE ((size_t)((char *)_estack - (char *)_heap_limit))

static float merged[CNN_MERGE_OUTPUT_LEN];
static double scratch[CNN_MERGE_SCRATCH_LEN];
/* Both folded models, then one network's activations; reused by the evaluation here and, as
 * cnn_forward_buffer, by cnn_eval.c before the merge. */
#define FORWARD_LEN                                                                           \
    (CNN_MERGE_FORWARD_LEN > CNN_SCRATCH_LEN ? CNN_MERGE_FORWARD_LEN : CNN_SCRATCH_LEN)
float cnn_forward_buffer[FORWARD_LEN];
#define forward cnn_forward_buffer
static size_t indices[CNN_MERGE_INDEX_LEN];
static pleas_cnn_merge_plan plan;
static pleas_cnn_merge_info info;
static float table[256];

/* A bit pattern the merge never writes (a NaN payload): what is left of it after a merge
 * shows how much of the scratch the merge used. */
static const uint64_t UNTOUCHED = 0x7ff8dead0000beefull;

static size_t peak_written(void) {
    size_t peak = CNN_MERGE_SCRATCH_LEN;
    while (peak > 0) {
        uint64_t bits;
        memcpy(&bits, &scratch[peak - 1], sizeof bits);
        if (bits != UNTOUCHED) break;
        peak--;
    }
    return peak;
}

/* Accuracies of the merged network: head `a` on the test images of classes 0-4, head `b` on
 * those of classes 5-9 (labels mapped to 0-4). */
static void evaluate(double budget) {
    const pleas_cnn_graph g = {1, 28, 28, plan.merged_layers, plan.merged_layer_count,
                               plan.merged_outputs, plan.merged_output_count};
    pleas_cnn_forward_plan fp;
    pleas_status s = pleas_cnn_forward_plan_f32(&g, &fp);
    check_status(s, PLEAS_SUCCESS, "cnn merged forward plan");
    int fits = s == PLEAS_SUCCESS && fp.output_len == 2 * CLASSES &&
               fp.scratch_len <= CNN_MERGE_FORWARD_LEN && fp.params_len == plan.output_len;
    check(fits, "the merged cnn runs in the merge's forward buffer");
    if (!fits) return;
    size_t correct[2] = {0, 0}, seen[2] = {0, 0};
    long t0 = sh_clock();
    for (size_t i = 0; i < demo_test_count; i++) {
        size_t label = demo_test_labels[i], head = label / CLASSES;
        float z[2 * CLASSES];
        s = pleas_cnn_forward_u8(&g, merged, plan.output_len, &demo_test_images[i * PIXELS],
                                 PIXELS, table, z, 2 * CLASSES, forward, fp.scratch_len);
        if (s != PLEAS_SUCCESS) {
            check_status(s, PLEAS_SUCCESS, "cnn merged forward");
            return;
        }
        const float *row = &z[head * CLASSES];
        size_t best = 0;
        for (size_t j = 1; j < CLASSES; j++)
            if (row[j] > row[best]) best = j;
        seen[head]++;
        correct[head] += best == label % CLASSES;
    }
    long t1 = sh_clock();
    double acc_a = (double)correct[0] / (double)(seen[0] ? seen[0] : 1);
    double acc_b = (double)correct[1] / (double)(seen[1] ? seen[1] : 1);
    sh_printf("cnn eval budget %.2f: %u test images in %.1f s\n", budget,
              (unsigned)(seen[0] + seen[1]), (double)(t1 - t0) / 100.0);
    /* The line host_reference.py compares with `pleas merge` + `pleas eval`. */
    sh_printf("cnn merge accuracy budget %.2f: a %.4f b %.4f (%u/%u, %u/%u)\n", budget, acc_a,
              acc_b, (unsigned)correct[0], (unsigned)seen[0], (unsigned)correct[1],
              (unsigned)seen[1]);
    check(acc_a > 0.7 && acc_b > 0.7, "merged cnn accuracy above 0.7 on both tasks");
}

static void merge_at(double budget) {
    pleas_status s = pleas_cnn_merge_plan_f32(&cnn_graph, PLEAS_MLP_HEADS_SEPARATE,
                                              CNN_MERGE_SAMPLES, budget, NULL, &plan);
    check_status(s, PLEAS_SUCCESS, "cnn merge plan");
    if (s != PLEAS_SUCCESS) return;
    int fits = plan.output_len <= CNN_MERGE_OUTPUT_LEN &&
               plan.scratch_len <= CNN_MERGE_SCRATCH_LEN &&
               plan.forward_len <= CNN_MERGE_FORWARD_LEN && plan.index_len <= CNN_MERGE_INDEX_LEN;
    check(fits, "the cnn merge plan fits the buffers sized at build time");
    if (!fits) return;
    sh_printf("cnn plan budget %.2f: widths %u %u %u, merged pairs %u %u %u, flop ratio %.4f; "
              "merged %u floats, scratch %u doubles, forward %u floats, indices %u\n",
              budget, (unsigned)(2 * plan.widths[0] - plan.merged_pairs[0]),
              (unsigned)(2 * plan.widths[1] - plan.merged_pairs[1]),
              (unsigned)(2 * plan.widths[2] - plan.merged_pairs[2]),
              (unsigned)plan.merged_pairs[0], (unsigned)plan.merged_pairs[1],
              (unsigned)plan.merged_pairs[2], plan.flop_ratio, (unsigned)plan.output_len,
              (unsigned)plan.scratch_len, (unsigned)plan.forward_len, (unsigned)plan.index_len);
    for (size_t i = 0; i < CNN_MERGE_SCRATCH_LEN; i++) memcpy(&scratch[i], &UNTOUCHED, 8);
    long t0 = sh_clock();
    s = pleas_cnn_merge_u8(&cnn_graph, cnn_a_params, CNN_PARAMS_LEN, cnn_b_params,
                           CNN_PARAMS_LEN, cnn_merge_images, CNN_MERGE_SAMPLES, table, PLEAS_MLP_HEADS_SEPARATE, budget,
                           NULL, merged, plan.output_len, &info, scratch, plan.scratch_len,
                           forward, plan.forward_len, indices, plan.index_len);
    long t1 = sh_clock();
    check_status(s, PLEAS_SUCCESS, "cnn merge");
    if (s != PLEAS_SUCCESS) return;
    size_t peak = peak_written();
    sh_printf("cnn merge budget %.2f: %u merge images in %.1f s; scratch written %u of %u "
              "doubles (peak %u B)\n",
              budget, (unsigned)CNN_MERGE_SAMPLES, (double)(t1 - t0) / 100.0, (unsigned)peak,
              (unsigned)plan.scratch_len, (unsigned)(peak * sizeof(double)));
    uint64_t hash = mlp_hash(merged, plan.output_len);
    /* The line run.sh compares with the host build of the C API. */
    sh_printf("cnn merged budget %.2f: %u floats, fnv1a 0x%08lx%08lx\n", budget,
              (unsigned)plan.output_len, (unsigned long)(hash >> 32),
              (unsigned long)(hash & 0xffffffffu));
    for (size_t f = 0; f < plan.fitted_layers; f++)
        sh_printf("cnn merge budget %.2f: layer %u: %u copied + %u primal + %u dual blocks, "
                  "ridge %.2e\n",
                  budget, (unsigned)f, (unsigned)info.layers[f].copied_blocks,
                  (unsigned)info.layers[f].primal_blocks, (unsigned)info.layers[f].dual_blocks,
                  info.layers[f].ridge);
    evaluate(budget);
}

void cnn_merge_demo(void) {
    for (int v = 0; v < 256; v++) table[v] = (float)v / 255.0f * 2.0f - 1.0f;
    static const double budgets[] = {CNN_MERGE_BUDGETS};
    sh_printf("cnn merge: the fashion CNN pair on %u merge images; RAM: merged %u B, scratch "
              "%u B, forward %u B, indices %u B\n",
              (unsigned)CNN_MERGE_SAMPLES, (unsigned)sizeof merged, (unsigned)sizeof scratch,
              (unsigned)sizeof forward, (unsigned)sizeof indices);
    paint_stack();
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) merge_at(budgets[i]);
    sh_printf("cnn merge: stack %u B used of %u reserved\n", (unsigned)stack_used(),
              (unsigned)STACK_RESERVE);
    check(stack_used() < STACK_RESERVE, "the cnn merge's stack stayed within its reserve");
    /* Refusals: a short forward buffer, model B's parameters one short. */
    check_status(pleas_cnn_merge_u8(&cnn_graph, cnn_a_params, CNN_PARAMS_LEN, cnn_b_params,
                                    CNN_PARAMS_LEN, cnn_merge_images, CNN_MERGE_SAMPLES, table,
                                    PLEAS_MLP_HEADS_SEPARATE, 1.0, NULL, merged,
                                    CNN_MERGE_OUTPUT_LEN, NULL, scratch, CNN_MERGE_SCRATCH_LEN,
                                    forward, 16, indices, CNN_MERGE_INDEX_LEN),
                 PLEAS_ERROR_SCRATCH, "cnn merge short forward buffer");
    check_status(pleas_cnn_merge_u8(&cnn_graph, cnn_a_params, CNN_PARAMS_LEN, cnn_b_params,
                                    CNN_PARAMS_LEN - 1, cnn_merge_images, CNN_MERGE_SAMPLES, table,
                                    PLEAS_MLP_HEADS_SEPARATE, 1.0, NULL, merged,
                                    CNN_MERGE_OUTPUT_LEN, NULL, scratch, CNN_MERGE_SCRATCH_LEN,
                                    forward, CNN_MERGE_FORWARD_LEN, indices,
                                    CNN_MERGE_INDEX_LEN),
                 PLEAS_ERROR_SIZE_MISMATCH, "cnn merge short parameters");
}
