#include "weighted_fusion.h"

void weighted_differences_begin(weighted_differences_t *d, size_t sensors, const fusion_real_t *first,
                                const fusion_real_t *last, size_t count) {
    d->sensors = sensors;
    d->count = count;
    for (size_t i = 0; i < sensors; i++) {
        d->previous[i] = first[i];
        d->mean[i] = count > 0 ? (last[i] - first[i]) / (fusion_real_t)count : FR(0.0);
        d->sum[i] = FR(0.0);
    }
}

void weighted_estimate_update(weighted_estimate_t *e, const weighted_differences_t *d, size_t sensors,
                              const fusion_real_t *last, fusion_real_t memory_samples) {
    fusion_real_t count = (fusion_real_t)d->count;
    for (size_t i = 0; i < sensors; i++) {
        /* Half the population variance of the window's differences. */
        fusion_real_t window_variance = d->count > 0 ? d->sum[i] / count / FR(2.0) : FR(0.0);
        if (e->started) {
            e->variance[i] = (e->support * e->variance[i] + count * window_variance) / (e->support + count);
        } else {
            e->variance[i] = window_variance;
        }
        e->last[i] = last[i];
    }
    fusion_real_t support = e->started ? e->support + count : count;
    e->support = support < memory_samples ? support : memory_samples;
    e->started = true;
}

void weighted_weights(const fusion_real_t *variances, size_t sensors, fusion_real_t *weights,
                      fusion_real_t *fused_variance) {
    fusion_real_t total = FR(0.0);
    for (size_t i = 0; i < sensors; i++) {
        fusion_real_t v = variances[i] > (fusion_real_t)WEIGHTED_VARIANCE_FLOOR ? variances[i]
                                                                                 : (fusion_real_t)WEIGHTED_VARIANCE_FLOOR;
        weights[i] = FR(1.0) / v;
        total += weights[i];
    }
    for (size_t i = 0; i < sensors; i++) {
        weights[i] /= total;
    }
    *fused_variance = FR(1.0) / total;
}
