/* The harness's engine on the firmware: the block API itself. */
#include "harness_engine.h"

#include "fuzzy_off_arm.h"
#include "kalman.h"

static fuzzy_off_arm_t fuzzy_block;
static kalman_t kalman_block;

int engine_init(int block, const void *params, float sampling_freq, const int *columns, size_t input_axes) {
    if (block == 0) return fuzzy_off_arm_init(&fuzzy_block, params, sampling_freq, columns, input_axes);
    return kalman_init(&kalman_block, params, sampling_freq, columns, input_axes);
}

int engine_process(int block, const fusion_window_t *window, float *features, size_t capacity, size_t *count) {
    int code;
    if (block == 0) {
        code = fuzzy_off_arm_process(&fuzzy_block, window, features, capacity);
        *count = fuzzy_off_arm_feature_count(&fuzzy_block);
    } else {
        code = kalman_process(&kalman_block, window, features, capacity);
        *count = kalman_feature_count(&kalman_block);
    }
    return code;
}

const char *engine_message(int block) {
    return block == 0 ? fuzzy_off_arm_message(&fuzzy_block) : kalman_message(&kalman_block);
}
