// What both adapters share: one static block instance per block of the impulse, configured from
// Studio's generated config struct on the first window and kept (with its state) afterwards.
#ifndef EI_FUSION_ADAPTER_HPP
#define EI_FUSION_ADAPTER_HPP

#include <string.h>

#include "edge-impulse-sdk/dsp/numpy_types.h"
#include "edge-impulse-sdk/dsp/returntypes.hpp"
#include "ei_fusion_blocks.h"
#include "fusion_window.h"

namespace ei_fusion {

int status_to_eidsp(int status);
void remember_error(const char *message);
void register_reset(void (*reset)(void));

inline int read_signal(void *context, size_t offset, size_t length, float *out) {
    return static_cast<ei::signal_t *>(context)->get_data(offset, length, out);
}

// Block: the C instance type; Params: its parameter struct; Api: the block's functions.
template <typename Block, typename Params, int DeclaredAxes>
struct Api {
    int (*init)(Block *, const Params *, float, const int *, size_t);
    void (*reset)(Block *);
    size_t (*feature_count)(const Block *);
    int (*process)(Block *, const fusion_window_t *, float *, size_t);
    const char *(*message)(const Block *);
    const char *const *axis_names;  // the block's axes, parameters.json order
};

template <typename Block>
struct Slot {
    bool used;
    bool configured;
    unsigned long block_id;
    float frequency;
    Block block;
};

// The input column of each declared axis: from the config's named axes when the export has
// them, else the signal's columns in declared order. False when a mapping is out of range.
template <typename Config, int DeclaredAxes>
bool columns_of(const Config *config, const char *const *axis_names, int columns[DeclaredAxes]) {
    for (int i = 0; i < DeclaredAxes; i++) columns[i] = -1;
#if EI_FUSION_CONFIG_HAS_NAMED_AXES
    if (config->named_axes_size > 0) {
        for (size_t n = 0; n < config->named_axes_size; n++) {
            const char *name = config->named_axes[n].name;
            int axis = config->named_axes[n].axis;
            if (axis < 0) continue;  // an optional axis left unselected
            if (name == NULL || axis >= config->axes) return false;
            for (int i = 0; i < DeclaredAxes; i++) {
                if (strcmp(axis_names[i], name) == 0) columns[i] = axis;
            }
        }
        return true;
    }
#else
    (void)axis_names;
#endif
    for (int i = 0; i < DeclaredAxes && i < config->axes; i++) columns[i] = i;
    return true;
}

template <typename Block, typename Params, typename Config, int DeclaredAxes>
int extract(Slot<Block> (&slots)[EI_FUSION_MAX_INSTANCES], const Api<Block, Params, DeclaredAxes> &api,
            void (*copy_params)(const Config *, Params *), void (*reset_all)(void), ei::signal_t *signal,
            ei::matrix_t *output, void *config_ptr, float frequency) {
    const Config *config = static_cast<const Config *>(config_ptr);
    if (signal == NULL || output == NULL || config == NULL || config->axes <= 0) {
        remember_error("extract: a NULL signal, output or config, or a config with no axes");
        return ei::EIDSP_PARAMETER_INVALID;
    }
    register_reset(reset_all);
    Slot<Block> *slot = NULL;
    for (auto &candidate : slots) {
        if (candidate.used && candidate.block_id == config->block_id) slot = &candidate;
    }
    for (auto &candidate : slots) {
        if (slot == NULL && !candidate.used) {
            slot = &candidate;
            slot->used = true;
            slot->configured = false;
            slot->block_id = config->block_id;
        }
    }
    if (slot == NULL) {
        remember_error("extract: more blocks of this type than EI_FUSION_MAX_INSTANCES");
        return ei::EIDSP_OUT_OF_BOUNDS;
    }
    if (!slot->configured || slot->frequency != frequency) {
        int columns[DeclaredAxes];
        if (!columns_of<Config, DeclaredAxes>(config, api.axis_names, columns)) {
            remember_error("extract: a named axis maps outside the block's signal");
            return ei::EIDSP_OUT_OF_BOUNDS;
        }
        Params params;
        copy_params(config, &params);
        int status = api.init(&slot->block, &params, frequency, columns, (size_t)config->axes);
        if (status != FUSION_OK) {
            remember_error(api.message(&slot->block));
            return status_to_eidsp(status);
        }
        slot->configured = true;
        slot->frequency = frequency;
    }
    if (signal->total_length % (size_t)config->axes != 0) {
        remember_error("extract: the signal's length is not a whole number of samples of the block's axes");
        return ei::EIDSP_SIGNAL_SIZE_MISMATCH;
    }
    size_t count = api.feature_count(&slot->block);
    if ((size_t)output->rows * output->cols < count) {
        remember_error("extract: the output matrix is smaller than the block's feature count");
        return ei::EIDSP_MATRIX_SIZE_MISMATCH;
    }
    fusion_window_t window = {read_signal, signal, signal->total_length / (size_t)config->axes,
                              (size_t)config->axes};
    int status = api.process(&slot->block, &window, output->buffer, (size_t)output->rows * output->cols);
    if (status != FUSION_OK) {
        remember_error(api.message(&slot->block));
        return status_to_eidsp(status);
    }
    return ei::EIDSP_OK;
}

template <typename Block, typename ResetFn>
void reset_slots(Slot<Block> (&slots)[EI_FUSION_MAX_INSTANCES], ResetFn reset) {
    for (auto &slot : slots) {
        if (slot.used && slot.configured) reset(&slot.block);
    }
}

}  // namespace ei_fusion

#endif
