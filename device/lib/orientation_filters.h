/* The orientation (AHRS) filters of the kalman block on the device: quaternion helpers, the
 * complementary, Madgwick, Mahony and error-state EKF kernels, the start-of-stream orientation and
 * the accelerometer innovation, as the server's `dsp.fusion.orientation` and `dsp.fusion.quaternion`
 * compute them (VQF runs through vqf_bridge.h).
 *
 * Conventions (the server's): quaternions scalar first [w, x, y, z], Hamilton product, rotating
 * sensor-frame vectors into an east-north-up earth frame; body rates integrate on the right,
 * q <- q * exp(omega dt / 2); Euler angles aerospace ZYX (roll about x, pitch about y, yaw about z).
 * acc in m/s^2 (specific force), gyr in rad/s, mag in any unit.
 *
 * Everything is plain data and needs no heap: a filter is its configuration (constants computed
 * once from the settings) and its state (copy it to save and restore the stream).
 */
#ifndef ORIENTATION_FILTERS_H
#define ORIENTATION_FILTERS_H

#include <stdbool.h>
#include <stddef.h>

#include "fusion_window.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORIENTATION_GRAVITY 9.80665

typedef enum {
    ORIENTATION_COMPLEMENTARY = 0,
    ORIENTATION_EKF,
    ORIENTATION_MADGWICK,
    ORIENTATION_MAHONY,
    ORIENTATION_VQF
} orientation_filter_t;

/* Constants of one filter, from its settings (orientation._SETTINGS) and the sampling rate. */
typedef struct {
    orientation_filter_t filter;
    fusion_real_t dt;                 /* sample period, s */
    fusion_real_t fs;                 /* 1 / dt */
    /* complementary: the accelerometer's and magnetometer's share per sample, 1 - alpha */
    fusion_real_t acc_gain, mag_gain;
    /* madgwick */
    fusion_real_t beta;
    /* mahony: gains in 1/s and 1/s^2 (ki_dt = ki * dt), the bias learning limit squared */
    fusion_real_t kp, ki_dt, bias_max_rate_sq;
    /* ekf */
    fusion_real_t gyro_var;           /* gyro_noise^2 dt */
    fusion_real_t bias_var;           /* bias_walk^2 dt */
    fusion_real_t acc_noise, acc_inflation, rate_inflation, innovation_inflation, acc_gate;
    fusion_real_t mag_var;            /* mag_noise^2 / dt */
    fusion_real_t mag_norm_tol, mag_dip_tol; /* fraction, rad */
    fusion_real_t ref_gain;           /* 1 - exp(-dt / mag_ref_tau) */
    fusion_real_t att_var0, bias_var0; /* start-of-stream covariance diagonal */
} orientation_config_t;

/* The stream: last orientation, gyro bias, and the EKF's covariance and magnetic reference. */
typedef struct {
    fusion_real_t q[4];
    fusion_real_t bias[3];
    fusion_real_t P[21];              /* ekf: 6x6 covariance (attitude, bias), upper triangle by rows */
    fusion_real_t mag_ref[2];         /* ekf: field strength (0 = none seen yet), dip in rad */
    fusion_real_t mag_ref_low[2];     /* ekf: what rounding took from mag_ref (compensated sums) */
} orientation_state_t;

/* Settings in the server's units (deprecated per-sample settings already resolved by the caller:
 * give `alpha` < 0 to use the time constant). */
typedef struct {
    double tau, tau_mag, alpha, alpha_mag;                      /* complementary */
    double beta;                                                /* madgwick */
    double kp, ki, bias_max_rate;                               /* mahony, gains resolved */
    double gyro_noise, bias_walk, bias_init, acc_noise, acc_inflation, rate_inflation,
        innovation_inflation, acc_gate, mag_noise, mag_norm_tol, mag_dip_tol_deg, mag_ref_tau; /* ekf */
} orientation_settings_t;

/* The server's defaults (orientation._SETTINGS) for every setting. */
void orientation_default_settings(orientation_settings_t *settings);

void orientation_configure(orientation_config_t *config, orientation_filter_t filter,
                           const orientation_settings_t *settings, fusion_real_t sampling_freq);

/* A stream starting at orientation q0, gyro bias 0 (and the EKF's start covariance). */
void orientation_start(const orientation_config_t *config, orientation_state_t *state, const fusion_real_t q0[4]);

/* Runs `n` samples (rows of 3: acc m/s^2, gyr rad/s, mag any unit or NULL) through the filter
 * (not vqf), writing each sample's orientation to quat_out and its accelerometer innovation
 * (rad, see orientation_innovation) to innovation_out. */
void orientation_run(const orientation_config_t *config, orientation_state_t *state, size_t n,
                     const fusion_real_t (*acc)[3], const fusion_real_t (*gyr)[3], const fusion_real_t (*mag)[3],
                     fusion_real_t (*quat_out)[4], fusion_real_t *innovation_out);

/* orientation_run that also writes each sample's gyro bias estimate (rad/s; what ekf and mahony
 * learn, the start value for the others) to bias_out, or nothing when bias_out is NULL. The
 * server's float64 library (device/server/orientation_server.c) reports it per sample. */
void orientation_run_with_bias(const orientation_config_t *config, orientation_state_t *state, size_t n,
                               const fusion_real_t (*acc)[3], const fusion_real_t (*gyr)[3],
                               const fusion_real_t (*mag)[3], fusion_real_t (*quat_out)[4],
                               fusion_real_t (*bias_out)[3], fusion_real_t *innovation_out);

/* The angle (rad) between the measured accelerometer direction and the gravity direction
 * predicted by q_prev propagated with this sample's bias-corrected gyro. */
fusion_real_t orientation_innovation(const fusion_real_t q_prev[4], const fusion_real_t bias_prev[3],
                                     const fusion_real_t acc[3], const fusion_real_t gyr[3], fusion_real_t dt);

/* --- quaternion helpers -------------------------------------------------------------------- */

void quat_multiply(const fusion_real_t a[4], const fusion_real_t b[4], fusion_real_t out[4]); /* out may alias */
void quat_normalize(fusion_real_t q[4]);
/* Unit quaternion of the rotation vector (rx, ry, rz), radians. */
void quat_exp(fusion_real_t rx, fusion_real_t ry, fusion_real_t rz, fusion_real_t out[4]);
/* Orientation of one accelerometer (and magnetometer, or NULL) reading: tilt, then heading. */
void quat_tilt_heading(const fusion_real_t acc[3], const fusion_real_t *mag, fusion_real_t out[4]);

/* ZYX Euler angles in radians of a unit quaternion (every filter's output is one), with the
 * gimbal-lock rule of the server's euler_zyx; also sin and cos of roll and yaw, for circular
 * means. Yaw (and its sin and cos) only when with_yaw. */
typedef struct {
    fusion_real_t roll, pitch, yaw;
    fusion_real_t roll_sin, roll_cos, yaw_sin, yaw_cos;
} euler_zyx_t;
void quat_euler_zyx(const fusion_real_t q[4], bool with_yaw, euler_zyx_t *out);

/* atan2 and asin for the per-sample code: in float32 a polynomial within a few ulps of the C
 * library's and several times cheaper; the C library's in float64. */
fusion_real_t orientation_atan2(fusion_real_t y, fusion_real_t x);
fusion_real_t orientation_asin(fusion_real_t x);

#ifdef __cplusplus
}
#endif

#endif
