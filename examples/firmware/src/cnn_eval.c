/*
 * The fashion CNN pair (tests/fixtures/fashion/cnn_split: A knows classes 0-4, B classes 5-9)
 * run on the device through pleas.h's compact graph (cnn_graph.h): each model is evaluated on
 * the embedded test images of its own classes, read as bytes through the normalisation table,
 * as `pleas eval` scores it on the host. The parameters (one const array per model, in layer
 * order, batch-norm unfolded) stay in flash; RAM holds the forward pass's scratch (activation
 * buffers and the layers' scratch), sized at build time by host/cnn_sizes.c (cnn_plan.h): the
 * CNN merge's forward buffer (cnn_merge.c), free before the merge.
 */
#include <stdint.h>

#include "cnn_graph.h"
#include "cnn_plan.h"
#include "cnn_split.h"
#include "demo.h"
#include "semihost.h"

enum { CLASSES = 5, PIXELS = 28 * 28 };

const float *const cnn_a_params = a_params;
const float *const cnn_b_params = b_params;
const uint8_t *const cnn_merge_images = cnn_x_match;

/* The forward scratch: the CNN merge's forward buffer, which the merge only uses later. */
#define scratch cnn_forward_buffer
static float table[256];

/* Accuracy of the model with parameters `params` on the test images of classes
 * `first .. first + 4` (labels mapped to 0-4); the prediction is the first maximal logit. */
static void evaluate(const float *params, size_t first, size_t *correct, size_t *seen) {
    *correct = *seen = 0;
    for (size_t i = 0; i < demo_test_count; i++) {
        size_t label = demo_test_labels[i];
        if (label < first || label >= first + CLASSES) continue;
        float z[CNN_OUTPUT_LEN];
        pleas_status s = pleas_cnn_forward_u8(&cnn_graph, params, CNN_PARAMS_LEN,
                                              &demo_test_images[i * PIXELS], PIXELS, table, z,
                                              CNN_OUTPUT_LEN, scratch, CNN_SCRATCH_LEN);
        if (s != PLEAS_SUCCESS) {
            check_status(s, PLEAS_SUCCESS, "cnn forward");
            return;
        }
        size_t best = 0;
        for (size_t j = 1; j < CLASSES; j++)
            if (z[j] > z[best]) best = j;
        (*seen)++;
        *correct += best == label - first;
    }
}

void cnn_demo(void) {
    for (int v = 0; v < 256; v++) table[v] = (float)v / 255.0f * 2.0f - 1.0f;
    pleas_cnn_forward_plan plan;
    pleas_status s = pleas_cnn_forward_plan_f32(&cnn_graph, &plan);
    check_status(s, PLEAS_SUCCESS, "cnn plan");
    if (s != PLEAS_SUCCESS) return;
    sh_printf("cnn: %u layers, %u parameters per model, scratch %u floats (%u B, %u activation "
              "slots)\n",
              (unsigned)cnn_graph.layer_count, (unsigned)plan.params_len,
              (unsigned)plan.scratch_len, (unsigned)(plan.scratch_len * sizeof(float)),
              (unsigned)plan.slots);
    int fits = plan.params_len == CNN_PARAMS_LEN && plan.output_len <= CNN_OUTPUT_LEN &&
               plan.scratch_len <= CNN_SCRATCH_LEN;
    check(fits, "the cnn plan fits the buffers sized at build time");
    if (!fits) return;
    float z[CNN_OUTPUT_LEN];
    check_status(pleas_cnn_forward_u8(&cnn_graph, a_params, CNN_PARAMS_LEN, demo_test_images,
                                      PIXELS, table, z, CNN_OUTPUT_LEN, scratch,
                                      plan.scratch_len - 1),
                 PLEAS_ERROR_SCRATCH, "cnn short scratch");
    check_status(pleas_cnn_forward_u8(&cnn_graph, a_params, CNN_PARAMS_LEN - 1, demo_test_images,
                                      PIXELS, table, z, CNN_OUTPUT_LEN, scratch, CNN_SCRATCH_LEN),
                 PLEAS_ERROR_SIZE_MISMATCH, "cnn short parameters");

    size_t ca, na, cb, nb;
    long t0 = sh_clock();
    evaluate(a_params, 0, &ca, &na);
    evaluate(b_params, CLASSES, &cb, &nb);
    long t1 = sh_clock();
    double acc_a = (double)ca / (double)(na ? na : 1), acc_b = (double)cb / (double)(nb ? nb : 1);
    sh_printf("cnn eval: %u test images in %.1f s\n", (unsigned)(na + nb),
              (double)(t1 - t0) / 100.0);
    /* The line host_reference.py compares with the host's `pleas eval` of each model. */
    sh_printf("cnn accuracy: a %.4f b %.4f (%u/%u, %u/%u)\n", acc_a, acc_b, (unsigned)ca,
              (unsigned)na, (unsigned)cb, (unsigned)nb);
    check(acc_a > 0.8 && acc_b > 0.8, "cnn accuracy above 0.8 on both tasks");
}
