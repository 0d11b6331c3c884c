/* The orientation filters of device/lib in float64, for the server: `dsp.fusion.orientation`
 * calls orientation_server_run through ctypes (dsp/fusion/orientation_library.py), so the server
 * and the device run one implementation of each recursion. Only plain arrays and scalars cross
 * the boundary, so Python needs no copy of the C structs' layout.
 *
 * Built by `python -m device.build server` (make install) with -DFUSION_REAL_DOUBLE.
 */
#include <stddef.h>
#include <string.h>

#include "orientation_filters.h"

#ifndef FUSION_REAL_DOUBLE
#error "the server's library is float64: compile with -DFUSION_REAL_DOUBLE"
#endif

/* The settings array, in this order (orientation_settings_t's fields, server units):
 * tau, tau_mag, alpha, alpha_mag (complementary; alpha < 0: from tau), beta (madgwick), kp, ki,
 * bias_max_rate (mahony, gains resolved), gyro_noise, bias_walk, bias_init, acc_noise,
 * acc_inflation, rate_inflation, innovation_inflation, acc_gate, mag_noise, mag_norm_tol,
 * mag_dip_tol (degrees), mag_ref_tau (ekf). */
#define SERVER_SETTINGS 20

/* The loader compares this with its own count, so a stale library is refused, not misread. */
size_t orientation_server_settings_count(void);
int orientation_server_run(const char *filter, const double *settings, double sampling_freq, double *q, double *bias,
                           double *covariance, double *mag_reference, size_t n, const double *acc, const double *gyr,
                           const double *mag, double *quat_out, double *bias_out, double *innovation_out);
void orientation_server_innovation(double dt, const double *q0, const double *bias0, size_t n, const double *acc,
                                   const double *gyr, const double *quat, const double *bias, double *innovation_out);

size_t orientation_server_settings_count(void) { return SERVER_SETTINGS; }

/* Index of (r, c), r <= c, in the upper triangle packed by rows (orientation_state_t.P). */
static size_t packed(size_t r, size_t c) { return r * (13 - r) / 2 + (c - r); }

/* Runs `n` samples (rows of 3, row-major; mag NULL for none) of filter `filter` ("complementary",
 * "ekf", "madgwick" or "mahony") continuing the stream in q[4] (unit) and bias[3], and for ekf
 * covariance[36] (6x6 row-major; its upper triangle is read, the symmetric matrix written) and
 * mag_reference[2] (strength, 0 = none seen yet; dip, rad), all updated in place. covariance and
 * mag_reference may be NULL for the start-of-stream values. Writes quat_out (n x 4), innovation_out
 * (n) and, unless NULL, bias_out (n x 3). Returns 0, or -1 for a filter it does not run. */
int orientation_server_run(const char *filter, const double *settings, double sampling_freq, double *q, double *bias,
                           double *covariance, double *mag_reference, size_t n, const double *acc, const double *gyr,
                           const double *mag, double *quat_out, double *bias_out, double *innovation_out) {
    orientation_filter_t kind;
    if (strcmp(filter, "complementary") == 0) {
        kind = ORIENTATION_COMPLEMENTARY;
    } else if (strcmp(filter, "ekf") == 0) {
        kind = ORIENTATION_EKF;
    } else if (strcmp(filter, "madgwick") == 0) {
        kind = ORIENTATION_MADGWICK;
    } else if (strcmp(filter, "mahony") == 0) {
        kind = ORIENTATION_MAHONY;
    } else {
        return -1;
    }
    const double *s = settings;
    orientation_settings_t resolved = {
        .tau = s[0], .tau_mag = s[1], .alpha = s[2], .alpha_mag = s[3], .beta = s[4], .kp = s[5], .ki = s[6],
        .bias_max_rate = s[7], .gyro_noise = s[8], .bias_walk = s[9], .bias_init = s[10], .acc_noise = s[11],
        .acc_inflation = s[12], .rate_inflation = s[13], .innovation_inflation = s[14], .acc_gate = s[15],
        .mag_noise = s[16], .mag_norm_tol = s[17], .mag_dip_tol_deg = s[18], .mag_ref_tau = s[19],
    };
    orientation_config_t config;
    orientation_state_t state;
    orientation_configure(&config, kind, &resolved, sampling_freq);
    orientation_start(&config, &state, q);
    memcpy(state.bias, bias, sizeof state.bias);
    if (covariance != NULL) {
        for (size_t r = 0; r < 6; r++) {
            for (size_t c = r; c < 6; c++) {
                state.P[packed(r, c)] = covariance[6 * r + c];
            }
        }
    }
    if (mag_reference != NULL) {
        memcpy(state.mag_ref, mag_reference, sizeof state.mag_ref);
    }
    orientation_run_with_bias(&config, &state, n, (const double(*)[3])acc, (const double(*)[3])gyr,
                              (const double(*)[3])mag, (double(*)[4])quat_out, (double(*)[3])bias_out,
                              innovation_out);
    memcpy(q, state.q, sizeof state.q);
    memcpy(bias, state.bias, sizeof state.bias);
    if (covariance != NULL) {
        for (size_t r = 0; r < 6; r++) {
            for (size_t c = r; c < 6; c++) {
                covariance[6 * r + c] = covariance[6 * c + r] = state.P[packed(r, c)];
            }
        }
    }
    if (mag_reference != NULL) {
        memcpy(mag_reference, state.mag_ref, sizeof state.mag_ref);
    }
    return 0;
}

/* The accelerometer innovation of another filter's track (the server's VQF): sample i's prior is
 * the orientation after sample i - 1 (q0 and bias0 before the first), propagated with sample i's
 * bias-corrected gyro. quat is n x 4, bias n x 3 or NULL (bias0 throughout). */
void orientation_server_innovation(double dt, const double *q0, const double *bias0, size_t n, const double *acc,
                                   const double *gyr, const double *quat, const double *bias, double *innovation_out) {
    const double *q = q0, *b = bias0;
    for (size_t i = 0; i < n; i++) {
        innovation_out[i] = orientation_innovation(q, b, acc + 3 * i, gyr + 3 * i, dt);
        q = quat + 4 * i;
        if (bias != NULL) {
            b = bias + 3 * i;
        }
    }
}
