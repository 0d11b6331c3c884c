/* The footprint probe: one block linked alone into a bare firmware (no I/O, no heap), so its
 * flash and static RAM are the probe's sizes minus those of the same probe without the block
 * (PROBE_BLOCK undefined). 0: fuzzy-off-arm, 1: kalman, both at their parameters.json defaults
 * except the kalman filter, which the probe picks at run time so every filter stays linked. */
#include <stdint.h>

#include "fusion_window.h"
#ifdef PROBE_BLOCK
#include "probe_params.h" /* PROBE_DEFAULT_PARAMS: the block's parameters.json defaults, generated */
#endif

#define PROBE_SAMPLES 64u

volatile uint32_t probe_sink;

#if defined(PROBE_BLOCK) && PROBE_BLOCK == 0
#include "fuzzy_off_arm.h"
static fuzzy_off_arm_t block;
static const fuzzy_off_arm_params_t params = PROBE_DEFAULT_PARAMS;
#define AXES 3u
#define INIT(columns) fuzzy_off_arm_init(&block, &params, 50.0f, columns, AXES)
#define PROCESS(window, out, n) fuzzy_off_arm_process(&block, window, out, n)
#elif defined(PROBE_BLOCK) && PROBE_BLOCK == 1
#include "kalman.h"
static kalman_t block;
static kalman_params_t params = PROBE_DEFAULT_PARAMS;
static const char *const filters[] = {"vqf", "ekf", "madgwick", "mahony", "complementary", "kf", "weighted"};
#define AXES 9u
#define INIT(columns) (params.filter = filters[probe_sink % 7u], kalman_init(&block, &params, 100.0f, columns, AXES))
#define PROCESS(window, out, n) kalman_process(&block, window, out, n)
#endif

/* The window and the features live in the application in every probe, the baseline too, so the
 * difference is the block's alone. */
static float values[PROBE_SAMPLES * 9u];
static float features[256];

#ifdef AXES
static int read_values(void *context, size_t offset, size_t length, float *out) {
    const float *source = (const float *)context;
    for (size_t i = 0; i < length; i++) out[i] = source[offset + i];
    return 0;
}
#endif

int main(void) {
#ifdef AXES
    int columns[16];
    for (unsigned i = 0; i < 16u; i++) columns[i] = i < AXES ? (int)i : -1;
    for (unsigned i = 0; i < PROBE_SAMPLES * AXES; i++) values[i] = (float)(probe_sink + i % 7u);
    fusion_window_t window = {read_values, values, PROBE_SAMPLES, AXES};
    int status = INIT(columns);
    if (status == 0) status = PROCESS(&window, features, sizeof features / sizeof features[0]);
    probe_sink = (uint32_t)status + (uint32_t)features[0];
#endif
    /* Written and read in every probe, so no probe optimises them away. */
    values[probe_sink % (PROBE_SAMPLES * 9u)] = (float)probe_sink;
    features[probe_sink % 256u] = (float)probe_sink;
    probe_sink += (uint32_t)values[(probe_sink + 1u) % (PROBE_SAMPLES * 9u)] + (uint32_t)features[(probe_sink + 3u) % 256u];
    for (;;) probe_sink++;
}
