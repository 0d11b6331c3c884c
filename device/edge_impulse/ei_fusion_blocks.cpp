#include "ei_fusion_adapter.hpp"

namespace ei_fusion {

static char last_error[FUSION_MESSAGE_CAPACITY];
// Each block type registers its reset on its first window, so the reset function needs no
// knowledge of which blocks the impulse uses.
static void (*resets[2])(void);

int status_to_eidsp(int status) {
    switch (status) {
    case FUSION_OK: return ei::EIDSP_OK;
    case FUSION_ERR_PARAMETER: return ei::EIDSP_PARAMETER_INVALID;
    case FUSION_ERR_AXES: return ei::EIDSP_PARAMETER_INVALID;
    case FUSION_ERR_UNSUPPORTED: return ei::EIDSP_NOT_SUPPORTED;
    case FUSION_ERR_CAPACITY: return ei::EIDSP_OUT_OF_BOUNDS;
    case FUSION_ERR_READ: return ei::EIDSP_SIGNAL_SIZE_MISMATCH;
    default: return ei::EIDSP_INPUT_MATRIX_EMPTY;  // FUSION_ERR_INPUT, FUSION_ERR_STATE
    }
}

void remember_error(const char *message) {
    size_t length = strlen(message);
    if (length >= sizeof last_error) length = sizeof last_error - 1;
    memcpy(last_error, message, length);
    last_error[length] = '\0';
}

void register_reset(void (*reset)(void)) {
    for (auto &slot : resets) {
        if (slot == reset) return;
        if (slot == NULL) {
            slot = reset;
            return;
        }
    }
}

}  // namespace ei_fusion

void ei_fusion_blocks_reset(void) {
    for (auto reset : ei_fusion::resets) {
        if (reset != NULL) reset();
    }
}

const char *ei_fusion_blocks_last_error(void) { return ei_fusion::last_error; }
