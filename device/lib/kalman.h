/* The kalman block on the device: the server's `kalman` block (dsp/fusion/kalman.py) in C11,
 * float32, no heap. One instance is one stream: init once with the block's parameters, then
 * process window after window; the state carries from each window to the next as the server's
 * `state` does (window-increase-ms overlap included), and a failed window leaves it unchanged.
 *
 * Filters: complementary, ekf, madgwick, mahony, vqf (orientation from accX-Z, gyrX-Z and
 * optionally magX-Z), kf (constant-velocity Kalman filter, optionally RTS-smoothed, per mapped
 * axis) and weighted (inverse-variance fusion of the mapped axes). Features, their order and
 * their count are the server's (kalman_feature_count gives the count after init).
 */
#ifndef KALMAN_H
#define KALMAN_H

#include <stdbool.h>
#include <stddef.h>

#include "fusion_window.h"
#include "linear_kalman.h"
#include "orientation_filters.h"
#include "vqf_bridge.h"
#include "weighted_fusion.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One entry per parameters.json parameter, in file order, with the C type Studio generates. */
#define KALMAN_PARAMETERS(X)                          \
    X(const char *, filter)                           \
    X(const char *, acc_units)                        \
    X(const char *, gyro_units)                       \
    X(float, complementary_time_constant)             \
    X(float, complementary_heading_time_constant)     \
    X(const char *, complementary_alpha)              \
    X(const char *, complementary_alpha_mag)          \
    X(float, madgwick_beta)                           \
    X(float, mahony_time_constant)                    \
    X(float, mahony_integral_time)                    \
    X(const char *, mahony_kp)                        \
    X(const char *, mahony_ki)                        \
    X(float, ekf_gyro_noise)                          \
    X(float, ekf_bias_walk)                           \
    X(float, ekf_acc_noise)                           \
    X(float, ekf_mag_noise)                           \
    X(float, vqf_tau_acc)                             \
    X(float, vqf_tau_mag)                             \
    X(float, kf_process_noise)                        \
    X(float, kf_measurement_noise)                    \
    X(bool, kf_rts)                                   \
    X(const char *, weighted_variances)               \
    X(float, weighted_memory)                         \
    X(float, window_increase_ms)

typedef struct {
#define KALMAN_FIELD(type, name) type name;
    KALMAN_PARAMETERS(KALMAN_FIELD)
#undef KALMAN_FIELD
} kalman_params_t;

/* accX accY accZ gyrX gyrY gyrZ magX magY magZ (info.axes order). */
#define KALMAN_DECLARED_AXES 9
/* kf on all nine axes: six features per axis. */
#define KALMAN_MAX_FEATURES (6 * KALMAN_DECLARED_AXES)
/* The longest window process accepts; sizes the per-window scratch, 5 values per sample: for the
 * orientation filters roll, pitch, yaw (two-pass and circular statistics) and the squared
 * accelerometer and gyroscope norms (the units check's medians); for kf the filtered value and
 * rate and the covariance the RTS smoother runs back over; for weighted the fused value. */
#ifndef KALMAN_MAX_WINDOW_SAMPLES
#define KALMAN_MAX_WINDOW_SAMPLES 1024
#endif
/* 0 leaves VQF out of the firmware (about 13 KB of flash: VQF and the double-precision trig it
 * pulls in): init then refuses filter vqf with FUSION_ERR_UNSUPPORTED, and vqf_bridge.cpp and
 * vqf_single_precision.cpp need not be compiled. */
#ifndef KALMAN_WITH_VQF
#define KALMAN_WITH_VQF 1
#endif
/* The window is read this many values at a time (32 samples of 9 axes). */
#define KALMAN_CHUNK_VALUES 288
#define KALMAN_CHUNK_SAMPLES 32

/* The state one stream carries from window to window. */
typedef struct {
    bool started; /* false: the next window starts the stream */
    union {
        struct {
            orientation_state_t filter; /* q and bias: the last outputs (also for vqf) */
            vqf_bridge_t vqf;
        } orientation;
        struct {
            cv_state_t x[KALMAN_DECLARED_AXES];
            cv_cov_t P[KALMAN_DECLARED_AXES];
        } kf;
        weighted_estimate_t weighted;
    } u;
} kalman_stream_t;

typedef struct {
    /* settings */
    bool ready;
    int kind;                                 /* orientation, kf or weighted */
    orientation_filter_t filter;
    const char *filter_name;
    size_t input_axes;
    size_t chunk_samples;                     /* samples per read */
    size_t mapped;                            /* mapped declared axes, in declared order: */
    unsigned char mapped_axis[KALMAN_DECLARED_AXES];
    int mapped_column[KALMAN_DECLARED_AXES];
    int columns[KALMAN_DECLARED_AXES];        /* input column per declared axis, -1 unmapped */
    bool has_mag;
    fusion_real_t acc_scale, gyr_scale;       /* to m/s^2 and rad/s */
    bool acc_in_g, gyr_in_deg;
    fusion_real_t sampling_freq;
    size_t init_samples;                      /* round(0.1 s * fs), at least 1 */
    size_t increase;                          /* window-increase-ms in samples */
    size_t feature_count;
    orientation_config_t orientation;
    float vqf_tau_acc, vqf_tau_mag;
    cv_model_t cv;
    bool rts;
    bool given_variances;
    fusion_real_t variances[KALMAN_DECLARED_AXES];
    fusion_real_t memory_samples;
    /* the stream, and its copy from before the window being processed */
    kalman_stream_t stream, saved;
    /* scratch */
    float raw[KALMAN_CHUNK_VALUES];
    fusion_real_t acc[KALMAN_CHUNK_SAMPLES][3], gyr[KALMAN_CHUNK_SAMPLES][3], mag[KALMAN_CHUNK_SAMPLES][3];
    fusion_real_t quat[KALMAN_CHUNK_SAMPLES][4];
    fusion_real_t innovation[KALMAN_CHUNK_SAMPLES];
    fusion_real_t scratch[5 * KALMAN_MAX_WINDOW_SAMPLES];
    char message[FUSION_MESSAGE_CAPACITY];
} kalman_t;

/* sizeof(kalman_t), for callers that allocate it opaquely (ctypes). */
size_t kalman_instance_size(void);

/* Validates the parameters, the axis mapping (columns[i]: the input column of declared axis i,
 * or -1) and the sampling frequency as the server does, and starts a fresh stream. Returns
 * FUSION_OK or FUSION_ERR_PARAMETER / FUSION_ERR_AXES / FUSION_ERR_CAPACITY (see kalman_message).
 * The parameter strings are read during init only. */
int kalman_init(kalman_t *block, const kalman_params_t *params, float sampling_freq,
                const int columns[KALMAN_DECLARED_AXES], size_t input_axes);

/* A new stream with the same settings. */
void kalman_reset(kalman_t *block);

/* Features per window (0 when init failed). */
size_t kalman_feature_count(const kalman_t *block);

/* One window's features (the server's order) into features[0 .. kalman_feature_count), state
 * carried to the next call. On an error (FUSION_ERR_INPUT, FUSION_ERR_STATE, ...) the stream is
 * left as it was before the call. */
int kalman_process(kalman_t *block, const fusion_window_t *window, float *features, size_t capacity);

/* The message of the last error, "" if none. */
const char *kalman_message(const kalman_t *block);

#ifdef __cplusplus
}
#endif

#endif
