// The harness's engine for the adapter check: every window goes through Studio's entry points
// (extract_<cppType>_features) with the config struct Studio generates, as in an export.
#include <stdlib.h>

#include "../firmware/harness_engine.h"

#include "edge-impulse-sdk/dsp/numpy_types.h"
#include "ei_fusion_blocks.h"
#include "fuzzy_off_arm.h"
#include "kalman.h"
#include "model-parameters/model_metadata.h"

int extract_fuzzy_off_arm_features(ei::signal_t *signal, ei::matrix_t *output_matrix, void *config_ptr,
                                   const float frequency);
int extract_kalman_features(ei::signal_t *signal, ei::matrix_t *output_matrix, void *config_ptr,
                            const float frequency);

static ei_dsp_config_fuzzy_off_arm_t fuzzy_config;
static ei_dsp_config_kalman_t kalman_config;
static ei_dsp_named_axis_t named_axes[16];
static float frequency;
static size_t feature_count;
// Only to learn the feature count and init errors, as Studio knows them before deployment.
static fuzzy_off_arm_t fuzzy_probe;
static kalman_t kalman_probe;
static const char *const fuzzy_names[] = {"light", "motion", "hr_locked"};
static const char *const kalman_names[] = {"accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ", "magX", "magY", "magZ"};

template <typename Config>
static void describe_axes(Config *config, const char *const *names, int declared, const int *columns,
                          size_t input_axes) {
    config->block_id = 7;
    config->implementation_version = 1;
    config->axes = (int)input_axes;
#if EI_FUSION_CONFIG_HAS_NAMED_AXES
    size_t count = 0;
    for (int i = 0; i < declared; i++) {
        if (columns[i] >= 0) named_axes[count++] = ei_dsp_named_axis_t{names[i], columns[i]};
    }
    config->named_axes = named_axes;
    config->named_axes_size = count;
#else
    (void)names, (void)declared, (void)columns;  // an older export: the columns are in declared order
#endif
}

extern "C" int engine_init(int block, const void *params, float sampling_freq, const int *columns,
                           size_t input_axes) {
    frequency = sampling_freq;
    int code;
    if (block == 0) {
        const fuzzy_off_arm_params_t *p = static_cast<const fuzzy_off_arm_params_t *>(params);
        describe_axes(&fuzzy_config, fuzzy_names, FUZZY_OFF_ARM_DECLARED_AXES, columns, input_axes);
#define COPY_FIELD(type, name) fuzzy_config.name = p->name;
        FUZZY_OFF_ARM_PARAMETERS(COPY_FIELD)
#undef COPY_FIELD
        code = fuzzy_off_arm_init(&fuzzy_probe, p, sampling_freq, columns, input_axes);
        feature_count = fuzzy_off_arm_feature_count(&fuzzy_probe);
    } else {
        const kalman_params_t *p = static_cast<const kalman_params_t *>(params);
        describe_axes(&kalman_config, kalman_names, KALMAN_DECLARED_AXES, columns, input_axes);
#define COPY_FIELD(type, name) kalman_config.name = p->name;
        KALMAN_PARAMETERS(COPY_FIELD)
#undef COPY_FIELD
        code = kalman_init(&kalman_probe, p, sampling_freq, columns, input_axes);
        feature_count = kalman_feature_count(&kalman_probe);
    }
    ei_fusion_blocks_reset();
    return code;
}

extern "C" int engine_process(int block, const fusion_window_t *window, float *features, size_t capacity,
                              size_t *count) {
    if (feature_count > capacity) return -100;
    ei::signal_t signal;
    signal.total_length = window->samples * window->input_axes;
    signal.get_data = [window](size_t offset, size_t length, float *out) {
        return window->read(window->context, offset, length, out);
    };
    ei::matrix_t output(1, (uint32_t)feature_count, features);
    *count = feature_count;
    if (block == 0) return extract_fuzzy_off_arm_features(&signal, &output, &fuzzy_config, frequency);
    return extract_kalman_features(&signal, &output, &kalman_config, frequency);
}

extern "C" const char *engine_message(int block) {
    const char *message = ei_fusion_blocks_last_error();
    if (message[0] == '\0') return block == 0 ? fuzzy_off_arm_message(&fuzzy_probe) : kalman_message(&kalman_probe);
    return message;
}

// The SDK's allocator hooks, which its headers reference; the blocks never call them.
void *ei_malloc(size_t size) { return malloc(size); }
void *ei_calloc(size_t nitems, size_t size) { return calloc(nitems, size); }
void ei_free(void *ptr) { free(ptr); }
