#include "linear_kalman.h"

void cv_model_init(cv_model_t *m, double fs, double q, double r) {
    double dt = 1.0 / fs;
    m->dt = (fusion_real_t)dt;
    m->q00 = (fusion_real_t)(q * dt * dt * dt / 3.0);
    m->q01 = (fusion_real_t)(q * dt * dt / 2.0);
    m->q11 = (fusion_real_t)(q * dt);
    m->r = (fusion_real_t)r;
    m->p11_start = (fusion_real_t)(2.0 * r * fs * fs);
}

void cv_start(const cv_model_t *m, fusion_real_t z0, cv_state_t *x, cv_cov_t *P) {
    x->value = z0;
    x->rate = FR(0.0);
    P->p00 = m->r;
    P->p01 = FR(0.0);
    P->p11 = m->p11_start;
}

/* The prior F P F' + Q of the posterior P. */
static void cv_prior(const cv_model_t *m, const cv_cov_t *P, cv_cov_t *A) {
    fusion_real_t dt = m->dt;
    A->p00 = P->p00 + FR(2.0) * dt * P->p01 + dt * dt * P->p11 + m->q00;
    A->p01 = P->p01 + dt * P->p11 + m->q01;
    A->p11 = P->p11 + m->q11;
}

static inline fusion_real_t gain_of_prior(const cv_model_t *m, const cv_cov_t *A, fusion_real_t *k0, fusion_real_t *k1) {
    fusion_real_t s = A->p00 + m->r;
    *k0 = A->p00 / s;
    *k1 = A->p01 / s;
    return s;
}

void cv_gain(const cv_model_t *m, const cv_cov_t *P, fusion_real_t *k0, fusion_real_t *k1) {
    cv_cov_t A;
    cv_prior(m, P, &A);
    gain_of_prior(m, &A, k0, k1);
}

void cv_covariance_step(const cv_model_t *m, cv_cov_t *P, fusion_real_t *k0_out, fusion_real_t *k1_out) {
    cv_cov_t A;
    cv_prior(m, P, &A);
    fusion_real_t k0, k1, r = m->r;
    fusion_real_t s = gain_of_prior(m, &A, &k0, &k1);
    /* Joseph form (I - K H) P^- (I - K H)' + K R K', with 1 - k0 written as r / s (no
     * cancellation when the gain is near 1). */
    fusion_real_t c = r / s;
    P->p00 = c * c * A.p00 + k0 * k0 * r;
    P->p01 = c * (A.p01 - k1 * A.p00) + k0 * k1 * r;
    P->p11 = A.p11 - FR(2.0) * k1 * A.p01 + k1 * k1 * A.p00 + k1 * k1 * r;
    *k0_out = k0;
    *k1_out = k1;
}

void cv_smoother_gain(const cv_model_t *m, const cv_cov_t *P, fusion_real_t G[4]) {
    cv_cov_t A;
    cv_prior(m, P, &A);
    fusion_real_t dt = m->dt;
    fusion_real_t pf00 = P->p00 + dt * P->p01, pf01 = P->p01;
    fusion_real_t pf10 = P->p01 + dt * P->p11, pf11 = P->p11;
    fusion_real_t inv_det = FR(1.0) / (A.p00 * A.p11 - A.p01 * A.p01);
    fusion_real_t i00 = A.p11 * inv_det, i01 = -A.p01 * inv_det, i11 = A.p00 * inv_det;
    G[0] = pf00 * i00 + pf01 * i01;
    G[1] = pf00 * i01 + pf01 * i11;
    G[2] = pf10 * i00 + pf11 * i01;
    G[3] = pf10 * i01 + pf11 * i11;
}
