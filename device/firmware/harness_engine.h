/* How the harness runs a block: straight through the block API (harness_engine_direct.c, the
 * firmware) or through the Edge Impulse adapters (edge_impulse/harness_engine_ei.cpp, the
 * adapter check). Block 0 is fuzzy-off-arm, 1 kalman; `params` points at the block's params_t. */
#ifndef HARNESS_ENGINE_H
#define HARNESS_ENGINE_H

#include <stddef.h>

#include "fusion_window.h"

#ifdef __cplusplus
extern "C" {
#endif

int engine_init(int block, const void *params, float sampling_freq, const int *columns, size_t input_axes);
int engine_process(int block, const fusion_window_t *window, float *features, size_t capacity, size_t *count);
const char *engine_message(int block);

#ifdef __cplusplus
}
#endif

#endif
