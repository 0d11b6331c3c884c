// extract_kalman_features: the kalman block in an Edge Impulse C++ export.
#include "ei_fusion_adapter.hpp"
#include "kalman.h"
#include "model-parameters/model_metadata.h"

static const char *const kalman_axis_names[KALMAN_DECLARED_AXES] = {
    "accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ", "magX", "magY", "magZ"};
static ei_fusion::Slot<kalman_t> kalman_slots[EI_FUSION_MAX_INSTANCES];
static const ei_fusion::Api<kalman_t, kalman_params_t, KALMAN_DECLARED_AXES> kalman_api = {
    kalman_init, kalman_reset, kalman_feature_count, kalman_process, kalman_message, kalman_axis_names};

static void copy_kalman_params(const ei_dsp_config_kalman_t *config, kalman_params_t *params) {
#define COPY_FIELD(type, name) params->name = config->name;
    KALMAN_PARAMETERS(COPY_FIELD)
#undef COPY_FIELD
}

static void reset_kalman(void) {
    ei_fusion::reset_slots<kalman_t>(kalman_slots, kalman_reset);
}

int extract_kalman_features(ei::signal_t *signal, ei::matrix_t *output_matrix, void *config_ptr,
                            const float frequency) {
    return ei_fusion::extract<kalman_t, kalman_params_t, ei_dsp_config_kalman_t, KALMAN_DECLARED_AXES>(
        kalman_slots, kalman_api, copy_kalman_params, reset_kalman, signal, output_matrix, config_ptr, frequency);
}
