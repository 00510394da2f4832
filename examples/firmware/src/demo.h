/* What the parts of the firmware demo share. */
#ifndef DEMO_H
#define DEMO_H

#include <stddef.h>

#include "pleas.h"

/* Counts a check (main.c): prints FAIL with `what` when `ok` is 0. */
void check(int ok, const char *what);

/* Counts a status check: `got` must be `want`. */
void check_status(pleas_status got, pleas_status want, const char *what);

/* The real merge of the two fashion MLPs and its evaluation (mlp_merge.c). */
void mlp_demo(void);

/* Bytes of heap newlib took so far (syscalls.c). */
size_t heap_used(void);

#endif
