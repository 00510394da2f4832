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

/* The embedded test images (`demo_test_count` x 784 bytes) and their labels, defined once in
 * mlp_merge.c (they are 1.5 MB of flash) and shared with cnn_eval.c. */
extern const uint8_t *const demo_test_images;
extern const uint8_t *const demo_test_labels;
extern const size_t demo_test_count;

/* Bytes of heap newlib took so far (syscalls.c). */
size_t heap_used(void);

#endif
