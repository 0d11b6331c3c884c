#include "orientation_filters.h"

#include <math.h>
#include <string.h>

/* Fully unrolled small loops (the EKF's 3x3 and 6x6 products): several times fewer instructions
 * per multiply-add than loops at -Os. */
#if defined(__GNUC__) && !defined(__clang__)
#define UNROLL _Pragma("GCC unroll 6")
#else
#define UNROLL
#endif

/* P packed: its upper triangle row by row (21 values); PK gives the index of any (r, c). */
static const unsigned char PK[6][6] = {{0, 1, 2, 3, 4, 5},      {1, 6, 7, 8, 9, 10},    {2, 7, 11, 12, 13, 14},
                                       {3, 8, 12, 15, 16, 17}, {4, 9, 13, 16, 18, 19}, {5, 10, 14, 17, 19, 20}};
#define P_(r, c) P[PK[r][c]]

/* --- small numerics ------------------------------------------------------------------------ */

/* Half angles up to this use series for sin and cos: exact to float64 rounding there (the first
 * term left out is below h^10 / 10! = 3e-20), and far cheaper than sinf/cosf per sample. */
#define SMALL_HALF_ANGLE FR(0.05)

/* sin(h) / h and cos(h) as series in h^2 (Horner, reciprocal factorials: no divisions). */
static inline fusion_real_t sin_series(fusion_real_t h2) {
    return FR(1.0) + h2 * (FR(-1.6666666666666666667e-1) +
                           h2 * (FR(8.3333333333333333333e-3) +
                                 h2 * (FR(-1.9841269841269841270e-4) + h2 * FR(2.7557319223985890653e-6))));
}

static inline fusion_real_t cos_series(fusion_real_t h2) {
    return FR(1.0) + h2 * (FR(-0.5) + h2 * (FR(4.1666666666666666667e-2) +
                                            h2 * (FR(-1.3888888888888888889e-3) + h2 * FR(2.4801587301587301587e-5))));
}

static void sincos_half(fusion_real_t angle, fusion_real_t *s, fusion_real_t *c) {
    fusion_real_t h = FR(0.5) * angle;
    if (fr_fabs(h) <= SMALL_HALF_ANGLE) {
        fusion_real_t h2 = h * h;
        *s = h * sin_series(h2);
        *c = cos_series(h2);
    } else {
        *s = fr_sin(h);
        *c = fr_cos(h);
    }
}

#ifdef FUSION_REAL_DOUBLE
fusion_real_t orientation_atan2(fusion_real_t y, fusion_real_t x) { return atan2(y, x); }
#else
/* atan2 in float32 without the C library's special-case handling: Cephes' atanf polynomial on
 * [0, 1] reduced to |t| <= tan(pi/8) (relative error below 2e-7, a few ulps), in a third of
 * atan2f's instructions. Quadrants as atan2 (atan2(0, 0) = 0). */
fusion_real_t orientation_atan2(fusion_real_t y, fusion_real_t x) {
    fusion_real_t ax = fr_fabs(x), ay = fr_fabs(y);
    bool swap = ay > ax;
    fusion_real_t num = swap ? ax : ay, den = swap ? ay : ax;
    if (den == FR(0.0)) {
        return FR(0.0);
    }
    fusion_real_t t = num / den, offset = FR(0.0);
    if (t > FR(0.41421356237309504880)) {
        t = (t - FR(1.0)) / (t + FR(1.0));
        offset = FR(0.78539816339744830962);
    }
    fusion_real_t z = t * t;
    fusion_real_t r = offset + ((((FR(8.05374449538e-2) * z - FR(1.38776856032e-1)) * z + FR(1.99777106478e-1)) * z -
                                 FR(3.33329491539e-1)) * z * t + t);
    if (swap) r = FR(1.57079632679489661923) - r;
    if (x < FR(0.0)) r = FR(3.14159265358979323846) - r;
    return y < FR(0.0) ? -r : r;
}
#endif

fusion_real_t orientation_asin(fusion_real_t x) {
#ifdef FUSION_REAL_DOUBLE
    return asin(x);
#else
    return orientation_atan2(x, fr_sqrt((FR(1.0) - x) * (FR(1.0) + x)));
#endif
}

/* 1 - exp(-x) for x >= 0 without the cancellation of 1 - exp(-x) at small x (init only). */
static fusion_real_t one_minus_exp_neg(double x) {
    if (x < 0.5) {
        double term = x, sum = 0.0;
        for (int k = 1; k < 40 && term != 0.0; k++) {
            sum += term;
            term *= -x / (double)(k + 1);
        }
        return (fusion_real_t)sum;
    }
    return FR(1.0) - fr_exp(-(fusion_real_t)x);
}

/* --- quaternion helpers -------------------------------------------------------------------- */

void quat_multiply(const fusion_real_t a[4], const fusion_real_t b[4], fusion_real_t out[4]) {
    fusion_real_t w = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
    fusion_real_t x = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
    fusion_real_t y = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
    fusion_real_t z = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
    out[0] = w;
    out[1] = x;
    out[2] = y;
    out[3] = z;
}

void quat_normalize(fusion_real_t q[4]) {
    fusion_real_t inv = FR(1.0) / fr_sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    q[0] *= inv;
    q[1] *= inv;
    q[2] *= inv;
    q[3] *= inv;
}

void quat_exp(fusion_real_t rx, fusion_real_t ry, fusion_real_t rz, fusion_real_t out[4]) {
    fusion_real_t angle2 = rx * rx + ry * ry + rz * rz;
    fusion_real_t h2 = FR(0.25) * angle2;
    fusion_real_t c, s_over_angle;
    if (h2 <= SMALL_HALF_ANGLE * SMALL_HALF_ANGLE) {
        /* cos(h) and sin(h) / (2 h) with h = angle / 2, as series in h^2 (no square root). */
        c = cos_series(h2);
        s_over_angle = FR(0.5) * sin_series(h2);
    } else {
        fusion_real_t angle = fr_sqrt(angle2);
        c = fr_cos(FR(0.5) * angle);
        s_over_angle = fr_sin(FR(0.5) * angle) / angle;
    }
    out[0] = c;
    out[1] = rx * s_over_angle;
    out[2] = ry * s_over_angle;
    out[3] = rz * s_over_angle;
}

/* R(q) v: sensor frame to earth frame. */
static void rotate(const fusion_real_t q[4], fusion_real_t vx, fusion_real_t vy, fusion_real_t vz, fusion_real_t out[3]) {
    fusion_real_t w = q[0], x = q[1], y = q[2], z = q[3];
    out[0] = (FR(1.0) - FR(2.0) * (y * y + z * z)) * vx + FR(2.0) * (x * y - w * z) * vy + FR(2.0) * (x * z + w * y) * vz;
    out[1] = FR(2.0) * (x * y + w * z) * vx + (FR(1.0) - FR(2.0) * (x * x + z * z)) * vy + FR(2.0) * (y * z - w * x) * vz;
    out[2] = FR(2.0) * (x * z - w * y) * vx + FR(2.0) * (y * z + w * x) * vy + (FR(1.0) - FR(2.0) * (x * x + y * y)) * vz;
}

/* R(q)^T v: earth frame to sensor frame. */
static void rotate_inverse(const fusion_real_t q[4], fusion_real_t vx, fusion_real_t vy, fusion_real_t vz,
                           fusion_real_t out[3]) {
    fusion_real_t w = q[0], x = q[1], y = q[2], z = q[3];
    out[0] = (FR(1.0) - FR(2.0) * (y * y + z * z)) * vx + FR(2.0) * (x * y + w * z) * vy + FR(2.0) * (x * z - w * y) * vz;
    out[1] = FR(2.0) * (x * y - w * z) * vx + (FR(1.0) - FR(2.0) * (x * x + z * z)) * vy + FR(2.0) * (y * z + w * x) * vz;
    out[2] = FR(2.0) * (x * z + w * y) * vx + FR(2.0) * (y * z - w * x) * vy + (FR(1.0) - FR(2.0) * (x * x + y * y)) * vz;
}

/* Earth "up" in the sensor frame. */
static void gravity_in_sensor(const fusion_real_t q[4], fusion_real_t out[3]) {
    fusion_real_t w = q[0], x = q[1], y = q[2], z = q[3];
    out[0] = FR(2.0) * (x * z - w * y);
    out[1] = FR(2.0) * (y * z + w * x);
    out[2] = FR(1.0) - FR(2.0) * (x * x + y * y);
}

/* Rotation of the earth frame about its vertical by psi: (cos psi/2, 0, 0, sin psi/2) * q. */
static void turn_heading(fusion_real_t psi, fusion_real_t q[4]) {
    fusion_real_t s, c;
    sincos_half(psi, &s, &c);
    fusion_real_t turn[4] = {c, FR(0.0), FR(0.0), s};
    quat_multiply(turn, q, q);
}

void quat_tilt_heading(const fusion_real_t acc[3], const fusion_real_t *mag, fusion_real_t out[4]) {
    fusion_real_t ax = acc[0], ay = acc[1], az = acc[2];
    fusion_real_t roll = fr_atan2(ay, az);
    fusion_real_t pitch = fr_atan2(-ax, fr_sqrt(ay * ay + az * az));
    fusion_real_t cr = fr_cos(FR(0.5) * roll), sr = fr_sin(FR(0.5) * roll);
    fusion_real_t cp = fr_cos(FR(0.5) * pitch), sp = fr_sin(FR(0.5) * pitch);
    out[0] = cp * cr;
    out[1] = cp * sr;
    out[2] = sp * cr;
    out[3] = -sp * sr;
    if (mag != NULL) {
        fusion_real_t e[3];
        rotate(out, mag[0], mag[1], mag[2], e);
        if (e[0] * e[0] + e[1] * e[1] > FR(0.0)) {
            fusion_real_t psi = fr_atan2(e[0], e[1]);
            fusion_real_t turn[4] = {fr_cos(FR(0.5) * psi), FR(0.0), FR(0.0), fr_sin(FR(0.5) * psi)};
            quat_multiply(turn, out, out);
        }
    }
}

/* |sin(pitch)| beyond this is gimbal lock (the server's GIMBAL_LOCK_TOLERANCE; in float32 it
 * rounds to 1, so only a rounded |sin(pitch)| > 1 counts). */
#define GIMBAL_LOCK (FR(1.0) - FR(1e-12))

void quat_euler_zyx(const fusion_real_t q[4], bool with_yaw, euler_zyx_t *out) {
    fusion_real_t w = q[0], x = q[1], y = q[2], z = q[3];
    fusion_real_t sin_pitch = FR(2.0) * (w * y - z * x);
    fusion_real_t roll_n = FR(2.0) * (w * x + y * z), roll_d = FR(1.0) - FR(2.0) * (x * x + y * y);
    fusion_real_t yaw_n = FR(2.0) * (w * z + x * y), yaw_d = FR(1.0) - FR(2.0) * (y * y + z * z);
    /* |cos(pitch)| = hypot(roll_n, roll_d) for a unit quaternion: pitch = atan2(sin, cos) equals the
     * server's asin(clip(sin_pitch)) and stays accurate near +-90 degrees, where asin is not. */
    fusion_real_t r = fr_sqrt(roll_n * roll_n + roll_d * roll_d);
    out->pitch = orientation_atan2(sin_pitch, r);
    if (fr_fabs(sin_pitch) > GIMBAL_LOCK) {
        /* Only yaw -+ roll is defined: roll 0, yaw = 2 atan2(z, w) wrapped, i.e. the angle of
         * (w + i z)^2. */
        roll_n = FR(0.0);
        roll_d = FR(1.0);
        r = FR(1.0);
        yaw_n = FR(2.0) * w * z;
        yaw_d = w * w - z * z;
    }
    out->roll = orientation_atan2(roll_n, roll_d);
    if (r > FR(0.0)) {
        fusion_real_t inv = FR(1.0) / r;
        out->roll_sin = roll_n * inv;
        out->roll_cos = roll_d * inv;
    } else {
        out->roll_sin = FR(0.0);
        out->roll_cos = FR(1.0);
    }
    if (!with_yaw) return;
    out->yaw = orientation_atan2(yaw_n, yaw_d);
    fusion_real_t h = fr_sqrt(yaw_n * yaw_n + yaw_d * yaw_d);
    if (h > FR(0.0)) {
        fusion_real_t inv = FR(1.0) / h;
        out->yaw_sin = yaw_n * inv;
        out->yaw_cos = yaw_d * inv;
    } else {
        out->yaw_sin = FR(0.0);
        out->yaw_cos = FR(1.0);
    }
}

/* --- settings ------------------------------------------------------------------------------ */

void orientation_default_settings(orientation_settings_t *s) {
    s->tau = 1.5;
    s->tau_mag = 3.5;
    s->alpha = -1.0;
    s->alpha_mag = -1.0;
    s->beta = 0.05;
    s->kp = 1.0 / 3.0;
    s->ki = (1.0 / 3.0) / 6.0;
    s->bias_max_rate = 1.0;
    s->gyro_noise = 0.01;
    s->bias_walk = 1e-5;
    s->bias_init = 0.05;
    s->acc_noise = 0.003;
    s->acc_inflation = 0.3;
    s->rate_inflation = 0.0;
    s->innovation_inflation = 0.1;
    s->acc_gate = 0.5;
    s->mag_noise = 0.05;
    s->mag_norm_tol = 0.1;
    s->mag_dip_tol_deg = 10.0;
    s->mag_ref_tau = 30.0;
}

void orientation_configure(orientation_config_t *c, orientation_filter_t filter, const orientation_settings_t *s,
                           fusion_real_t sampling_freq) {
    memset(c, 0, sizeof *c);
    double fs = (double)sampling_freq;
    double dt = 1.0 / fs;
    c->filter = filter;
    c->dt = (fusion_real_t)dt;
    c->fs = sampling_freq;
    /* complementary: 1 - alpha, alpha = exp(-dt / tau) unless the per-sample alpha is given */
    c->acc_gain = s->alpha >= 0.0 ? (fusion_real_t)(1.0 - s->alpha) : one_minus_exp_neg(dt / s->tau);
    c->mag_gain = s->alpha_mag >= 0.0 ? (fusion_real_t)(1.0 - s->alpha_mag) : one_minus_exp_neg(dt / s->tau_mag);
    c->beta = (fusion_real_t)s->beta;
    c->kp = (fusion_real_t)s->kp;
    c->ki_dt = (fusion_real_t)(s->ki * dt);
    c->bias_max_rate_sq = (fusion_real_t)(s->bias_max_rate * s->bias_max_rate);
    c->gyro_var = (fusion_real_t)(s->gyro_noise * s->gyro_noise * dt);
    c->bias_var = (fusion_real_t)(s->bias_walk * s->bias_walk * dt);
    c->acc_noise = (fusion_real_t)s->acc_noise;
    c->acc_inflation = (fusion_real_t)s->acc_inflation;
    c->rate_inflation = (fusion_real_t)s->rate_inflation;
    c->innovation_inflation = (fusion_real_t)s->innovation_inflation;
    c->acc_gate = (fusion_real_t)s->acc_gate;
    c->mag_var = (fusion_real_t)(s->mag_noise * s->mag_noise / dt);
    c->mag_norm_tol = (fusion_real_t)s->mag_norm_tol;
    c->mag_dip_tol = (fusion_real_t)(s->mag_dip_tol_deg * (3.14159265358979323846 / 180.0));
    c->ref_gain = one_minus_exp_neg(dt / s->mag_ref_tau);
    c->att_var0 = (fusion_real_t)(0.05 * 0.05);
    c->bias_var0 = (fusion_real_t)(s->bias_init * s->bias_init);
}

void orientation_start(const orientation_config_t *c, orientation_state_t *st, const fusion_real_t q0[4]) {
    memset(st, 0, sizeof *st);
    memcpy(st->q, q0, sizeof st->q);
    for (int i = 0; i < 3; i++) {
        st->P[PK[i][i]] = c->att_var0;
        st->P[PK[3 + i][3 + i]] = c->bias_var0;
    }
}

/* --- innovation ---------------------------------------------------------------------------- */

/* The angle between acc and direction g, via atan2 for accuracy near 0. */
static fusion_real_t angle_between(const fusion_real_t acc[3], const fusion_real_t g[3]) {
    fusion_real_t ax = acc[0], ay = acc[1], az = acc[2];
    fusion_real_t cx = ay * g[2] - az * g[1], cy = az * g[0] - ax * g[2], cz = ax * g[1] - ay * g[0];
    return orientation_atan2(fr_sqrt(cx * cx + cy * cy + cz * cz), ax * g[0] + ay * g[1] + az * g[2]);
}

fusion_real_t orientation_innovation(const fusion_real_t q_prev[4], const fusion_real_t bias_prev[3],
                                     const fusion_real_t acc[3], const fusion_real_t gyr[3], fusion_real_t dt) {
    fusion_real_t dq[4], prior[4];
    quat_exp((gyr[0] - bias_prev[0]) * dt, (gyr[1] - bias_prev[1]) * dt, (gyr[2] - bias_prev[2]) * dt, dq);
    quat_multiply(q_prev, dq, prior);
    fusion_real_t g[3];
    gravity_in_sensor(prior, g);
    return angle_between(acc, g);
}

/* --- complementary ------------------------------------------------------------------------- */

static fusion_real_t complementary_step(const orientation_config_t *c, fusion_real_t q[4], const fusion_real_t a[3],
                                        const fusion_real_t g[3], const fusion_real_t *m) {
    fusion_real_t dt = c->dt, dq[4], v[3];
    quat_exp(g[0] * dt, g[1] * dt, g[2] * dt, dq);
    quat_multiply(q, dq, q);
    /* The gyro-propagated orientation is the innovation's prior (this filter has no bias). */
    fusion_real_t up[3];
    gravity_in_sensor(q, up);
    fusion_real_t innovation = angle_between(a, up);
    rotate(q, a[0], a[1], a[2], v);
    fusion_real_t horizontal = fr_sqrt(v[0] * v[0] + v[1] * v[1]);
    if (horizontal > FR(0.0)) {
        fusion_real_t angle = c->acc_gain * orientation_atan2(horizontal, v[2]);
        fusion_real_t s, co;
        sincos_half(angle, &s, &co);
        s /= horizontal;
        fusion_real_t turn[4] = {co, v[1] * s, -v[0] * s, FR(0.0)};
        quat_multiply(turn, q, q);
    }
    if (m != NULL) {
        fusion_real_t e[3];
        rotate(q, m[0], m[1], m[2], e);
        if (e[0] * e[0] + e[1] * e[1] > FR(0.0)) {
            turn_heading(c->mag_gain * orientation_atan2(e[0], e[1]), q);
        }
    }
    quat_normalize(q);
    return innovation;
}

/* --- madgwick ------------------------------------------------------------------------------ */

static void madgwick_step(const orientation_config_t *c, fusion_real_t q[4], const fusion_real_t acc[3],
                          const fusion_real_t gyr[3], const fusion_real_t *mag) {
    const fusion_real_t h = FR(0.70710678118654752440);
    static const fusion_real_t enu_from_nwu[4] = {FR(0.70710678118654752440), FR(0.0), FR(0.0), FR(0.70710678118654752440)};
    fusion_real_t m_norm = mag != NULL ? fr_sqrt(mag[0] * mag[0] + mag[1] * mag[1] + mag[2] * mag[2]) : FR(0.0);
    bool use_mag = m_norm > FR(0.0);
    if (use_mag) {
        fusion_real_t nwu_from_enu[4] = {h, FR(0.0), FR(0.0), -h};
        quat_multiply(nwu_from_enu, q, q);
    }
    fusion_real_t w = q[0], x = q[1], y = q[2], z = q[3];
    fusion_real_t gx = gyr[0], gy = gyr[1], gz = gyr[2];
    fusion_real_t dw = FR(0.5) * (-x * gx - y * gy - z * gz);
    fusion_real_t dx = FR(0.5) * (w * gx + y * gz - z * gy);
    fusion_real_t dy = FR(0.5) * (w * gy - x * gz + z * gx);
    fusion_real_t dz = FR(0.5) * (w * gz + x * gy - y * gx);
    fusion_real_t a_norm = fr_sqrt(acc[0] * acc[0] + acc[1] * acc[1] + acc[2] * acc[2]);
    if (a_norm > FR(0.0)) {
        fusion_real_t inv_a = FR(1.0) / a_norm;
        fusion_real_t ax = acc[0] * inv_a, ay = acc[1] * inv_a, az = acc[2] * inv_a;
        fusion_real_t f0 = FR(2.0) * (x * z - w * y) - ax;
        fusion_real_t f1 = FR(2.0) * (w * x + y * z) - ay;
        fusion_real_t f2 = FR(2.0) * (FR(0.5) - x * x - y * y) - az;
        fusion_real_t s0 = FR(-2.0) * y * f0 + FR(2.0) * x * f1;
        fusion_real_t s1 = FR(2.0) * z * f0 + FR(2.0) * w * f1 - FR(4.0) * x * f2;
        fusion_real_t s2 = FR(-2.0) * w * f0 + FR(2.0) * z * f1 - FR(4.0) * y * f2;
        fusion_real_t s3 = FR(2.0) * x * f0 + FR(2.0) * y * f1;
        if (use_mag) {
            fusion_real_t inv_m = FR(1.0) / m_norm;
            fusion_real_t mx = mag[0] * inv_m, my = mag[1] * inv_m, mz = mag[2] * inv_m, hv[3];
            rotate(q, mx, my, mz, hv);
            fusion_real_t bx = fr_sqrt(hv[0] * hv[0] + hv[1] * hv[1]);
            fusion_real_t bz = hv[2];
            fusion_real_t m0 = FR(2.0) * bx * (FR(0.5) - y * y - z * z) + FR(2.0) * bz * (x * z - w * y) - mx;
            fusion_real_t m1 = FR(2.0) * bx * (x * y - w * z) + FR(2.0) * bz * (w * x + y * z) - my;
            fusion_real_t m2 = FR(2.0) * bx * (w * y + x * z) + FR(2.0) * bz * (FR(0.5) - x * x - y * y) - mz;
            s0 += FR(-2.0) * bz * y * m0 + (FR(-2.0) * bx * z + FR(2.0) * bz * x) * m1 + FR(2.0) * bx * y * m2;
            s1 += FR(2.0) * bz * z * m0 + (FR(2.0) * bx * y + FR(2.0) * bz * w) * m1 +
                  (FR(2.0) * bx * z - FR(4.0) * bz * x) * m2;
            s2 += (FR(-4.0) * bx * y - FR(2.0) * bz * w) * m0 + (FR(2.0) * bx * x + FR(2.0) * bz * z) * m1 +
                  (FR(2.0) * bx * w - FR(4.0) * bz * y) * m2;
            s3 += (FR(-4.0) * bx * z + FR(2.0) * bz * x) * m0 + (FR(-2.0) * bx * w + FR(2.0) * bz * y) * m1 +
                  FR(2.0) * bx * x * m2;
        }
        fusion_real_t s_norm = fr_sqrt(s0 * s0 + s1 * s1 + s2 * s2 + s3 * s3);
        if (s_norm > FR(0.0)) {
            fusion_real_t k = c->beta / s_norm;
            dw -= k * s0;
            dx -= k * s1;
            dy -= k * s2;
            dz -= k * s3;
        }
    }
    fusion_real_t dt = c->dt;
    q[0] = w + dw * dt;
    q[1] = x + dx * dt;
    q[2] = y + dy * dt;
    q[3] = z + dz * dt;
    quat_normalize(q);
    if (use_mag) {
        quat_multiply(enu_from_nwu, q, q);
    }
}

/* --- mahony -------------------------------------------------------------------------------- */

static void mahony_step(const orientation_config_t *c, fusion_real_t q[4], fusion_real_t b[3], const fusion_real_t acc[3],
                        const fusion_real_t gyr[3], const fusion_real_t *mag) {
    fusion_real_t wx = gyr[0], wy = gyr[1], wz = gyr[2];
    fusion_real_t a_norm = fr_sqrt(acc[0] * acc[0] + acc[1] * acc[1] + acc[2] * acc[2]);
    if (a_norm > FR(0.0)) {
        fusion_real_t inv_a = FR(1.0) / a_norm;
        fusion_real_t ax = acc[0] * inv_a, ay = acc[1] * inv_a, az = acc[2] * inv_a, v[3];
        gravity_in_sensor(q, v);
        fusion_real_t ex = ay * v[2] - az * v[1], ey = az * v[0] - ax * v[2], ez = ax * v[1] - ay * v[0];
        fusion_real_t m_norm = mag != NULL ? fr_sqrt(mag[0] * mag[0] + mag[1] * mag[1] + mag[2] * mag[2]) : FR(0.0);
        if (m_norm > FR(0.0)) {
            fusion_real_t inv_m = FR(1.0) / m_norm;
            fusion_real_t mx = mag[0] * inv_m, my = mag[1] * inv_m, mz = mag[2] * inv_m, hv[3], u[3];
            rotate(q, mx, my, mz, hv);
            rotate_inverse(q, FR(0.0), fr_sqrt(hv[0] * hv[0] + hv[1] * hv[1]), hv[2], u);
            fusion_real_t inv_u = FR(1.0) / fr_sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
            fusion_real_t ux = u[0] * inv_u, uy = u[1] * inv_u, uz = u[2] * inv_u;
            fusion_real_t along = (my * uz - mz * uy) * v[0] + (mz * ux - mx * uz) * v[1] + (mx * uy - my * ux) * v[2];
            ex += along * v[0];
            ey += along * v[1];
            ez += along * v[2];
        }
        if (wx * wx + wy * wy + wz * wz < c->bias_max_rate_sq) {
            b[0] -= c->ki_dt * ex;
            b[1] -= c->ki_dt * ey;
            b[2] -= c->ki_dt * ez;
        }
        wx += c->kp * ex - b[0];
        wy += c->kp * ey - b[1];
        wz += c->kp * ez - b[2];
    } else {
        wx -= b[0];
        wy -= b[1];
        wz -= b[2];
    }
    fusion_real_t w = q[0], x = q[1], y = q[2], z = q[3], hdt = FR(0.5) * c->dt;
    q[0] = w + hdt * (-x * wx - y * wy - z * wz);
    q[1] = x + hdt * (w * wx + y * wz - z * wy);
    q[2] = y + hdt * (w * wy - x * wz + z * wx);
    q[3] = z + hdt * (w * wz + x * wy - y * wx);
    quat_normalize(q);
}

/* --- ekf ----------------------------------------------------------------------------------- */


/* Error-state EKF (the server's _ekf_kernel), written for few operations per sample without
 * changing what it computes:
 * - the covariance prediction in 3x3 blocks: F = [[Rt, -dt I], [0, I]] and P = [[A, B], [B', C]]
 *   give F P F' = [[N Rt' - dt M, M], [M', C]] with N = Rt A - dt B' and M = Rt B - dt C (the 6x6
 *   products' sums without their multiplications by 0 and 1);
 * - the accelerometer update in the plane normal to the predicted gravity v: H = [v]x maps every
 *   attitude error into that plane and the measurement noise is isotropic, so the component of the
 *   measurement along v gets zero gain; with (e1, e2, v) a right-handed orthonormal frame, the
 *   update with H2 = [e1; e2] (attitude part) and measurement (e2 . y, -e1 . y) is the 3x3
 *   update exactly (a 2x2 innovation covariance instead of 3x3).
 * Returns the sample's innovation. */
static fusion_real_t ekf_step(const orientation_config_t *c, orientation_state_t *st, const fusion_real_t acc[3],
                              const fusion_real_t gyr[3], const fusion_real_t *mag) {
    fusion_real_t *q = st->q, *b = st->bias, *P = st->P;
    fusion_real_t dt = c->dt;
    /* --- predict */
    fusion_real_t rx = (gyr[0] - b[0]) * dt, ry = (gyr[1] - b[1]) * dt, rz = (gyr[2] - b[2]) * dt;
    fusion_real_t dq[4], v[3];
    quat_exp(rx, ry, rz, dq);
    quat_multiply(q, dq, q);
    quat_normalize(q);
    gravity_in_sensor(q, v);
    fusion_real_t innovation = angle_between(acc, v);
    fusion_real_t w = dq[0], x = dq[1], y = dq[2], z = dq[3];
    fusion_real_t Rt[3][3] = {
        {FR(1.0) - FR(2.0) * (y * y + z * z), FR(2.0) * (x * y + w * z), FR(2.0) * (x * z - w * y)},
        {FR(2.0) * (x * y - w * z), FR(1.0) - FR(2.0) * (x * x + z * z), FR(2.0) * (y * z + w * x)},
        {FR(2.0) * (x * z + w * y), FR(2.0) * (y * z - w * x), FR(1.0) - FR(2.0) * (x * x + y * y)},
    };
    fusion_real_t N[3][3], M[3][3];
    UNROLL for (int r = 0; r < 3; r++) {
        UNROLL for (int k = 0; k < 3; k++) {
            N[r][k] = Rt[r][0] * P_(0, k) + Rt[r][1] * P_(1, k) + Rt[r][2] * P_(2, k) - dt * P_(k, 3 + r);
            M[r][k] = Rt[r][0] * P_(0, 3 + k) + Rt[r][1] * P_(1, 3 + k) + Rt[r][2] * P_(2, 3 + k) - dt * P_(3 + r, 3 + k);
        }
    }
    UNROLL for (int r = 0; r < 3; r++) {
        UNROLL for (int k = r; k < 3; k++) {
            P_(r, k) = N[r][0] * Rt[k][0] + N[r][1] * Rt[k][1] + N[r][2] * Rt[k][2] - dt * M[r][k];
        }
        UNROLL for (int k = 0; k < 3; k++) {
            P_(r, 3 + k) = M[r][k];
        }
    }
    UNROLL for (int r = 0; r < 3; r++) {
        P_(r, r) += c->gyro_var;
        P_(3 + r, 3 + r) += c->bias_var;
    }

    fusion_real_t ph[6][2], dx[6];
    /* --- accelerometer update */
    fusion_real_t a_norm = fr_sqrt(acc[0] * acc[0] + acc[1] * acc[1] + acc[2] * acc[2]);
    fusion_real_t deviation = fr_fabs(a_norm * (fusion_real_t)(1.0 / ORIENTATION_GRAVITY) - FR(1.0));
    if (a_norm > FR(0.0) && deviation <= c->acc_gate) {
        fusion_real_t rate = fr_sqrt(rx * rx + ry * ry + rz * rz) * c->fs;
        fusion_real_t inv_a = FR(1.0) / a_norm;
        fusion_real_t y0 = acc[0] * inv_a - v[0], y1 = acc[1] * inv_a - v[1], y2 = acc[2] * inv_a - v[2];
        fusion_real_t error = fr_sqrt(y0 * y0 + y1 * y1 + y2 * y2);
        fusion_real_t density = c->acc_noise + c->acc_inflation * deviation + c->rate_inflation * rate +
                                c->innovation_inflation * error;
        fusion_real_t sigma2 = density * density * c->fs;
        /* e1 normal to v (from the axis v is farthest from), e2 = v x e1. */
        fusion_real_t e1[3], e2[3];
        if (fr_fabs(v[2]) < FR(0.9)) {
            fusion_real_t inv = FR(1.0) / fr_sqrt(v[0] * v[0] + v[1] * v[1]);
            e1[0] = v[1] * inv;
            e1[1] = -v[0] * inv;
            e1[2] = FR(0.0);
        } else {
            fusion_real_t inv = FR(1.0) / fr_sqrt(v[1] * v[1] + v[2] * v[2]);
            e1[0] = FR(0.0);
            e1[1] = v[2] * inv;
            e1[2] = -v[1] * inv;
        }
        e2[0] = v[1] * e1[2] - v[2] * e1[1];
        e2[1] = v[2] * e1[0] - v[0] * e1[2];
        e2[2] = v[0] * e1[1] - v[1] * e1[0];
        fusion_real_t m0 = e2[0] * y0 + e2[1] * y1 + e2[2] * y2;
        fusion_real_t m1 = -(e1[0] * y0 + e1[1] * y1 + e1[2] * y2);
        UNROLL for (int r = 0; r < 6; r++) {
            ph[r][0] = P_(r, 0) * e1[0] + P_(r, 1) * e1[1] + P_(r, 2) * e1[2];
            ph[r][1] = P_(r, 0) * e2[0] + P_(r, 1) * e2[1] + P_(r, 2) * e2[2];
        }
        fusion_real_t s00 = ph[0][0] * e1[0] + ph[1][0] * e1[1] + ph[2][0] * e1[2] + sigma2;
        fusion_real_t s01 = ph[0][1] * e1[0] + ph[1][1] * e1[1] + ph[2][1] * e1[2];
        fusion_real_t s11 = ph[0][1] * e2[0] + ph[1][1] * e2[1] + ph[2][1] * e2[2] + sigma2;
        fusion_real_t inv_det = FR(1.0) / (s00 * s11 - s01 * s01);
        fusion_real_t i00 = s11 * inv_det, i01 = -s01 * inv_det, i11 = s00 * inv_det;
        fusion_real_t K[6][2];
        UNROLL for (int r = 0; r < 6; r++) {
            K[r][0] = ph[r][0] * i00 + ph[r][1] * i01;
            K[r][1] = ph[r][0] * i01 + ph[r][1] * i11;
            dx[r] = K[r][0] * m0 + K[r][1] * m1;
        }
        UNROLL for (int r = 0; r < 6; r++) {
            UNROLL for (int k = r; k < 6; k++) {
                P_(r, k) -= K[r][0] * ph[k][0] + K[r][1] * ph[k][1];
            }
        }
        quat_exp(dx[0], dx[1], dx[2], dq);
        quat_multiply(q, dq, q);
        quat_normalize(q);
        b[0] += dx[3];
        b[1] += dx[4];
        b[2] += dx[5];
    }

    /* --- magnetometer heading update */
    if (mag != NULL) {
        fusion_real_t mx = mag[0], my = mag[1], mz = mag[2];
        fusion_real_t m_norm = fr_sqrt(mx * mx + my * my + mz * mz);
        if (m_norm > FR(0.0)) {
            fusion_real_t e[3];
            gravity_in_sensor(q, v);
            fusion_real_t inv_m = FR(1.0) / m_norm;
            fusion_real_t sin_dip = -(mx * v[0] + my * v[1] + mz * v[2]) * inv_m;
            sin_dip = sin_dip > FR(1.0) ? FR(1.0) : (sin_dip < FR(-1.0) ? FR(-1.0) : sin_dip);
            fusion_real_t dip = orientation_asin(sin_dip);
            fusion_real_t *ref = st->mag_ref;
            if (ref[0] <= FR(0.0)) {
                ref[0] = m_norm;
                ref[1] = dip;
            }
            bool undisturbed = fr_fabs(m_norm / ref[0] - FR(1.0)) <= c->mag_norm_tol &&
                               fr_fabs(dip - ref[1]) <= c->mag_dip_tol;
            /* The reference moves by ~1e-4 of the difference per sample: compensated sums keep
             * those small steps (float32 alone would round each by several percent). */
            fusion_real_t *low = st->mag_ref_low;
            for (int k = 0; k < 2; k++) {
                fusion_real_t step = c->ref_gain * ((k == 0 ? m_norm : dip) - ref[k]) - low[k];
                fusion_real_t sum = ref[k] + step;
                low[k] = (sum - ref[k]) - step;
                ref[k] = sum;
            }
            rotate(q, mx, my, mz, e);
            fusion_real_t floor_norm = FR(0.05) * m_norm;
            if (undisturbed && e[0] * e[0] + e[1] * e[1] > floor_norm * floor_norm) {
                fusion_real_t heading_error = orientation_atan2(e[0], e[1]);
                fusion_real_t h[6];
                UNROLL for (int r = 0; r < 6; r++) {
                    h[r] = P_(r, 0) * v[0] + P_(r, 1) * v[1] + P_(r, 2) * v[2];
                }
                fusion_real_t inv_s = FR(1.0) / (h[0] * v[0] + h[1] * v[1] + h[2] * v[2] + c->mag_var);
                fusion_real_t k[6];
                UNROLL for (int r = 0; r < 6; r++) {
                    k[r] = h[r] * inv_s;
                    dx[r] = k[r] * heading_error;
                }
                UNROLL for (int r = 0; r < 6; r++) {
                    UNROLL for (int col = r; col < 6; col++) {
                        P_(r, col) -= k[r] * h[col];
                    }
                }
                /* Keep only the rotation about the vertical: the field never tilts the estimate. */
                fusion_real_t along = dx[0] * v[0] + dx[1] * v[1] + dx[2] * v[2];
                quat_exp(along * v[0], along * v[1], along * v[2], dq);
                quat_multiply(q, dq, q);
                quat_normalize(q);
                b[0] += dx[3];
                b[1] += dx[4];
                b[2] += dx[5];
            }
        }
    }
    return innovation;
}

#undef P_

/* --- chunk runner -------------------------------------------------------------------------- */

void orientation_run(const orientation_config_t *c, orientation_state_t *st, size_t n, const fusion_real_t (*acc)[3],
                     const fusion_real_t (*gyr)[3], const fusion_real_t (*mag)[3], fusion_real_t (*quat_out)[4],
                     fusion_real_t *innovation_out) {
    switch (c->filter) {
    case ORIENTATION_COMPLEMENTARY:
        for (size_t i = 0; i < n; i++) {
            innovation_out[i] = complementary_step(c, st->q, acc[i], gyr[i], mag != NULL ? mag[i] : NULL);
            memcpy(quat_out[i], st->q, sizeof st->q);
        }
        break;
    case ORIENTATION_MADGWICK:
        for (size_t i = 0; i < n; i++) {
            innovation_out[i] = orientation_innovation(st->q, st->bias, acc[i], gyr[i], c->dt);
            madgwick_step(c, st->q, acc[i], gyr[i], mag != NULL ? mag[i] : NULL);
            memcpy(quat_out[i], st->q, sizeof st->q);
        }
        break;
    case ORIENTATION_MAHONY:
        for (size_t i = 0; i < n; i++) {
            innovation_out[i] = orientation_innovation(st->q, st->bias, acc[i], gyr[i], c->dt);
            mahony_step(c, st->q, st->bias, acc[i], gyr[i], mag != NULL ? mag[i] : NULL);
            memcpy(quat_out[i], st->q, sizeof st->q);
        }
        break;
    case ORIENTATION_EKF:
        for (size_t i = 0; i < n; i++) {
            innovation_out[i] = ekf_step(c, st, acc[i], gyr[i], mag != NULL ? mag[i] : NULL);
            memcpy(quat_out[i], st->q, sizeof st->q);
        }
        break;
    case ORIENTATION_VQF:
    default:
        break;
    }
}

void orientation_run_with_bias(const orientation_config_t *c, orientation_state_t *st, size_t n,
                               const fusion_real_t (*acc)[3], const fusion_real_t (*gyr)[3],
                               const fusion_real_t (*mag)[3], fusion_real_t (*quat_out)[4],
                               fusion_real_t (*bias_out)[3], fusion_real_t *innovation_out) {
    if (bias_out == NULL) {
        orientation_run(c, st, n, acc, gyr, mag, quat_out, innovation_out);
        return;
    }
    /* One sample per orientation_run call, so the recursions stay written once; the extra call
     * and switch cost a few nanoseconds a sample. */
    for (size_t i = 0; i < n; i++) {
        orientation_run(c, st, 1, acc + i, gyr + i, mag != NULL ? mag + i : NULL, quat_out + i, innovation_out + i);
        memcpy(bias_out[i], st->bias, sizeof st->bias);
    }
}
