/* Edge Impulse drop-ins for the fuzzy-off-arm and kalman custom blocks.
 *
 * Studio's C++ export calls `extract_fuzzy_off_arm_features` and `extract_kalman_features` for
 * these blocks and leaves their code to the user: these are that code. Copy the folder that
 * `make device-sdk` writes next to the export's `edge-impulse-sdk/` and `model-parameters/`, add
 * its .c and .cpp files to the build, and call `ei_fusion_blocks_reset()` wherever the
 * application resets the impulse (after `run_classifier_init()`, or when a new stream starts).
 *
 * State: each block keeps its filter state from window to window, as the server's state does,
 * in one static instance per block of the impulse (told apart by the config's block_id; at most
 * EI_FUSION_MAX_INSTANCES per block type, default 1: define it higher for an impulse with two
 * blocks of one type). No heap is used.
 *
 * Errors: EIDSP_PARAMETER_INVALID for a configuration the block refuses, EIDSP_NOT_SUPPORTED for
 * one the device build does not implement, EIDSP_MATRIX_SIZE_MISMATCH when the output matrix does
 * not hold the block's features, EIDSP_OUT_OF_BOUNDS for a window longer than a compile-time
 * maximum or an invalid axis mapping, EIDSP_SIGNAL_SIZE_MISMATCH for a signal whose length is not
 * a whole number of samples, and EIDSP_INPUT_MATRIX_EMPTY for invalid data (NaN, units, ...).
 * `ei_fusion_blocks_last_error()` gives the block's message for the last failure.
 */
#ifndef EI_FUSION_BLOCKS_H
#define EI_FUSION_BLOCKS_H

#ifndef EI_FUSION_MAX_INSTANCES
#define EI_FUSION_MAX_INSTANCES 1
#endif

/* Exports from 2024 on give custom blocks `named_axes`; set 0 for an older export without it
 * (the signal's columns are then the block's axes in parameters.json order). */
#ifndef EI_FUSION_CONFIG_HAS_NAMED_AXES
#define EI_FUSION_CONFIG_HAS_NAMED_AXES 1
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Starts every block's stream anew (settings are kept). */
void ei_fusion_blocks_reset(void);

/* The message of the last error any block returned, "" if none. */
const char *ei_fusion_blocks_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
