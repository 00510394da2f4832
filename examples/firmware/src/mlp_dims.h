/* The merge the firmware runs, from the generated header (gen_data.py): the shape of the two
 * fashion MLPs and their layers. Shared by the firmware (mlp_merge.c) and the host tool that
 * sizes its buffers and runs the same merge on the host (host/host_merge.c). */
#ifndef MLP_DIMS_H
#define MLP_DIMS_H

#include "pleas.h"

#define MLP_DIMS_INIT                                                                        \
    {                                                                                        \
        A_LAYERS_0_WEIGHT_DIM1, 2, {A_LAYERS_0_WEIGHT_DIM0, A_LAYERS_1_WEIGHT_DIM0},         \
            A_HEAD_WEIGHT_DIM0, 1, PLEAS_MLP_HEADS_SEPARATE                                  \
    }

/* Hidden layers, then the head: weight and bias of each (const arrays, in flash). */
#define MLP_MODEL_A_INIT                                                                     \
    {{{a_layers_0_weight, a_layers_0_bias},                                                  \
      {a_layers_1_weight, a_layers_1_bias},                                                  \
      {a_head_weight, a_head_bias}}}
#define MLP_MODEL_B_INIT                                                                     \
    {{{b_layers_0_weight, b_layers_0_bias},                                                  \
      {b_layers_1_weight, b_layers_1_bias},                                                  \
      {b_head_weight, b_head_bias}}}

/* Merge images (rows of x_match). */
#define MLP_MERGE_SAMPLES DATA_X_MATCH_DIM0

#endif
