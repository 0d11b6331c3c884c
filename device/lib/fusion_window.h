/* What every fusion block of this folder shares: the window reader, the error codes and the
 * number type.
 *
 * A window is the block's input axes interleaved sample by sample, exactly as Edge Impulse's
 * `signal_t` holds it (and as `/run`'s `features`). Blocks read it through `read`, in chunks and
 * as often as they need, so no block ever needs the whole window copied into RAM; the Edge
 * Impulse adapter passes `signal_t::get_data` straight through.
 */
#ifndef FUSION_WINDOW_H
#define FUSION_WINDOW_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* float32 on the device. Built with -DFUSION_REAL_DOUBLE the same code runs in float64. */
#ifdef FUSION_REAL_DOUBLE
typedef double fusion_real_t;
#define FR(x) (x)
#define fr_sqrt sqrt
#define fr_fabs fabs
#define fr_sin sin
#define fr_cos cos
#define fr_atan2 atan2
#define fr_asin asin
#define fr_acos acos
#define fr_exp exp
#define fr_floor floor
#define fr_fmod fmod
#else
typedef float fusion_real_t;
#define FR(x) (x##f)
#define fr_sqrt sqrtf
#define fr_fabs fabsf
#define fr_sin sinf
#define fr_cos cosf
#define fr_atan2 atan2f
#define fr_asin asinf
#define fr_acos acosf
#define fr_exp expf
#define fr_floor floorf
#define fr_fmod fmodf
#endif

/* Copies `length` values starting at value `offset` of the interleaved window into `out`;
 * returns 0 on success, anything else on failure (the block then returns FUSION_ERR_READ). */
typedef int (*fusion_read_fn)(void *context, size_t offset, size_t length, float *out);

typedef struct {
    fusion_read_fn read;
    void *context;
    size_t samples;      /* samples in the window */
    size_t input_axes;   /* values per sample */
} fusion_window_t;

/* A reader over a window already in memory: `context` points at its interleaved float values.
 * The host harness and the emulator firmware use it; on the device the SDK's signal is read. */
int fusion_read_memory(void *context, size_t offset, size_t length, float *out);

/* Return codes of every block function. Edge Impulse adapters turn them into EIDSP_* codes. */
enum {
    FUSION_OK = 0,
    FUSION_ERR_PARAMETER = -1,   /* a setting is out of range or unknown (init) */
    FUSION_ERR_AXES = -2,        /* a needed axis is not mapped, or the mapping is invalid */
    FUSION_ERR_INPUT = -3,       /* the window's values are invalid (NaN, out of range, units) */
    FUSION_ERR_CAPACITY = -4,    /* a compile-time maximum is too small for this configuration or window */
    FUSION_ERR_READ = -5,        /* the window reader failed */
    FUSION_ERR_UNSUPPORTED = -6, /* a configuration the device build does not implement */
    FUSION_ERR_STATE = -7        /* the filter left the valid range; the stream was reset */
};

/* Longest message a block keeps for its last error, terminator included. */
#define FUSION_MESSAGE_CAPACITY 160

#ifdef __cplusplus
}
#endif

#endif
