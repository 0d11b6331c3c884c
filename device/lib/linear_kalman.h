/* The constant-velocity linear Kalman filter of the kalman block's "kf" filter, one independent
 * filter per axis, with the Rauch-Tung-Striebel smoother: the textbook per-sample recursion the
 * server's `dsp.fusion.linear_kalman` equals (it only evaluates it faster).
 *
 * Per axis at sample period dt: state [value, rate], F = [[1, dt], [0, 1]], process noise
 * Q = q [[dt^3/3, dt^2/2], [dt^2/2, dt]] (white acceleration of density q), measurement
 * z = value + v, Var(v) = r. Each sample predicts then updates (Joseph form). A stream starts
 * from x = [z_0, 0], P = diag(r, 2 r / dt^2).
 */
#ifndef LINEAR_KALMAN_H
#define LINEAR_KALMAN_H

#include "fusion_window.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    fusion_real_t dt, q00, q01, q11, r;
    fusion_real_t p11_start;          /* 2 r / dt^2 */
} cv_model_t;

/* A symmetric 2x2 covariance. */
typedef struct {
    fusion_real_t p00, p01, p11;
} cv_cov_t;

typedef struct {
    fusion_real_t value, rate;
} cv_state_t;

/* q in units^2 / s^3, r in units^2, fs in Hz (all positive; checked by the caller). */
void cv_model_init(cv_model_t *model, double fs, double q, double r);

/* The start of a stream from the first measurement. */
void cv_start(const cv_model_t *model, fusion_real_t z0, cv_state_t *x, cv_cov_t *P);

/* The gain of the sample after posterior P (from its prior F P F' + Q). */
void cv_gain(const cv_model_t *model, const cv_cov_t *P, fusion_real_t *k0, fusion_real_t *k1);

/* The gain of the next sample from the posterior P of the previous one (as cv_gain, to the bit);
 * P becomes this sample's posterior (Joseph form). The covariance recursion does not depend on
 * the data. */
void cv_covariance_step(const cv_model_t *model, cv_cov_t *P, fusion_real_t *k0, fusion_real_t *k1);

/* Predict and update the state with measurement z and the sample's gain; returns the
 * innovation z - predicted value. */
static inline fusion_real_t cv_state_step(const cv_model_t *model, cv_state_t *x, fusion_real_t z,
                                          fusion_real_t k0, fusion_real_t k1) {
    fusion_real_t predicted = x->value + model->dt * x->rate;
    fusion_real_t error = z - predicted;
    x->value = predicted + k0 * error;
    x->rate = x->rate + k1 * error;
    return error;
}

/* The RTS gain G = P F' (F P F' + Q)^-1 of a sample with posterior P (row-major 2x2). */
void cv_smoother_gain(const cv_model_t *model, const cv_cov_t *P, fusion_real_t G[4]);

/* One RTS step backwards: the smoothed state at sample k from its filtered state and gain and
 * the smoothed state at k + 1 (overwritten with the result). */
static inline void cv_smooth_step(const cv_model_t *model, const fusion_real_t G[4], const cv_state_t *f,
                                  cv_state_t *s) {
    fusion_real_t dv = s->value - (f->value + model->dt * f->rate);
    fusion_real_t dw = s->rate - f->rate;
    s->value = f->value + G[0] * dv + G[1] * dw;
    s->rate = f->rate + G[2] * dv + G[3] * dw;
}

#ifdef __cplusplus
}
#endif

#endif
