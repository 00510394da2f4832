/* What the parts of the firmware demo share. */
#ifndef DEMO_H
#define DEMO_H

#include <stddef.h>
#include <stdint.h>

#include "pleas.h"

/* Counts a check (main.c): prints FAIL with `what` when `ok` is 0. */
void check(int ok, const char *what);

/* Counts a status check: `got` must be `want`. */
void check_status(pleas_status got, pleas_status want, const char *what);

/* The real merge of the two fashion MLPs and its evaluation (mlp_merge.c). */
void mlp_demo(void);

/* The convolutional pair evaluated through the compact graph of the C API (cnn_eval.c). */
void cnn_demo(void);

/* The convolutional pair merged on the device and the merged network evaluated
 * (cnn_merge.c). */
void cnn_merge_demo(void);

/* The embedded test images (`demo_test_count` x 784 bytes) and their labels, defined once in
 * mlp_merge.c (they are 1.5 MB of flash) and shared with cnn_eval.c. */
extern const uint8_t *const demo_test_images;
extern const uint8_t *const demo_test_labels;
extern const size_t demo_test_count;

/* The CNN pair's parameters (CNN_PARAMS_LEN floats each) and the CNN merge images
 * (CNN_MERGE_SAMPLES x 784 bytes), defined once in cnn_eval.c (which embeds cnn_split.h). */
extern const float *const cnn_a_params;
extern const float *const cnn_b_params;
extern const uint8_t *const cnn_merge_images;

/* The CNN pair's forward scratch, shared by cnn_eval.c and cnn_merge.c (cnn_plan.h's
 * larger length: CNN_SCRATCH_LEN or CNN_MERGE_FORWARD_LEN floats). */
extern float cnn_forward_buffer[];

/* Paints the free stack below the caller's frame; stack_used() then gives the high-water
 * mark since (mlp_merge.c). */
void paint_stack(void);
size_t stack_used(void);

/* Bytes of heap newlib took so far (syscalls.c). */
size_t heap_used(void);

#endif
