// extract_fuzzy_off_arm_features: the fuzzy-off-arm block in an Edge Impulse C++ export.
#include "ei_fusion_adapter.hpp"
#include "fuzzy_off_arm.h"
#include "model-parameters/model_metadata.h"

static const char *const fuzzy_axis_names[FUZZY_OFF_ARM_DECLARED_AXES] = {"light", "motion", "hr_locked"};
static ei_fusion::Slot<fuzzy_off_arm_t> fuzzy_slots[EI_FUSION_MAX_INSTANCES];
static const ei_fusion::Api<fuzzy_off_arm_t, fuzzy_off_arm_params_t, FUZZY_OFF_ARM_DECLARED_AXES> fuzzy_api = {
    fuzzy_off_arm_init, fuzzy_off_arm_reset, fuzzy_off_arm_feature_count, fuzzy_off_arm_process,
    fuzzy_off_arm_message, fuzzy_axis_names};

static void copy_fuzzy_params(const ei_dsp_config_fuzzy_off_arm_t *config, fuzzy_off_arm_params_t *params) {
#define COPY_FIELD(type, name) params->name = config->name;
    FUZZY_OFF_ARM_PARAMETERS(COPY_FIELD)
#undef COPY_FIELD
}

static void reset_fuzzy(void) {
    ei_fusion::reset_slots<fuzzy_off_arm_t>(fuzzy_slots, fuzzy_off_arm_reset);
}

int extract_fuzzy_off_arm_features(ei::signal_t *signal, ei::matrix_t *output_matrix, void *config_ptr,
                                   const float frequency) {
    return ei_fusion::extract<fuzzy_off_arm_t, fuzzy_off_arm_params_t, ei_dsp_config_fuzzy_off_arm_t,
                              FUZZY_OFF_ARM_DECLARED_AXES>(fuzzy_slots, fuzzy_api, copy_fuzzy_params, reset_fuzzy,
                                                           signal, output_matrix, config_ptr, frequency);
}
