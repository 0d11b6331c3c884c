/* Inverse-variance fusion of redundant sensors (the kalman block's "weighted" filter), as the
 * server's `dsp.fusion.weighted_fusion`: fused = sum(z_i / v_i) / sum(1 / v_i), fused variance
 * 1 / sum(1 / v_i), with each v_i floored at WEIGHTED_VARIANCE_FLOOR. The variances are given,
 * or estimated per sensor as half the population variance of its first differences, as a running
 * estimate over windows (the previous window's last sample makes the first difference; the support
 * is capped at the memory, in samples).
 */
#ifndef WEIGHTED_FUSION_H
#define WEIGHTED_FUSION_H

#include <stdbool.h>
#include <stddef.h>

#include "fusion_window.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WEIGHTED_MAX_SENSORS 9
#define WEIGHTED_VARIANCE_FLOOR 1e-12

/* The running estimate a stream carries. */
typedef struct {
    bool started;                                 /* false: no window seen yet */
    fusion_real_t variance[WEIGHTED_MAX_SENSORS];
    fusion_real_t last[WEIGHTED_MAX_SENSORS];     /* the last sample of the previous window */
    fusion_real_t support;                        /* differences the estimate rests on */
} weighted_estimate_t;

/* One window's first differences, accumulated sample by sample: sum of squared deviations from
 * their mean, which is known up front ((last - first) / count: the differences telescope). */
typedef struct {
    size_t sensors;
    size_t count;                                 /* differences in the window */
    fusion_real_t previous[WEIGHTED_MAX_SENSORS];
    fusion_real_t mean[WEIGHTED_MAX_SENSORS];
    fusion_real_t sum[WEIGHTED_MAX_SENSORS];
} weighted_differences_t;

/* `first`: the sample before the first difference (the previous window's last, or this window's
 * first, which is then not passed to weighted_differences_add); `last`: the window's last sample;
 * `count` > 0 differences. */
void weighted_differences_begin(weighted_differences_t *d, size_t sensors, const fusion_real_t *first,
                                const fusion_real_t *last, size_t count);

static inline void weighted_differences_add(weighted_differences_t *d, const fusion_real_t *z) {
    for (size_t i = 0; i < d->sensors; i++) {
        fusion_real_t deviation = (z[i] - d->previous[i]) - d->mean[i];
        d->sum[i] += deviation * deviation;
        d->previous[i] = z[i];
    }
}

/* Folds the window into the running estimate (count = 0: a window of one sample after others);
 * `last`: the window's last sample. */
void weighted_estimate_update(weighted_estimate_t *e, const weighted_differences_t *d, size_t sensors,
                              const fusion_real_t *last, fusion_real_t memory_samples);

/* Weights (summing to 1) and fused variance from per-sensor variances. */
void weighted_weights(const fusion_real_t *variances, size_t sensors, fusion_real_t *weights,
                      fusion_real_t *fused_variance);

#ifdef __cplusplus
}
#endif

#endif
