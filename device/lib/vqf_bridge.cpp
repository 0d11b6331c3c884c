// VQF's own vqf.hpp, in float32 as vqf_single_precision.cpp compiles VQF.
#define VQF_SINGLE_PRECISION

#include "vqf_bridge.h"

#include <new>

#include "vqf/vqf.hpp"

static_assert(sizeof(VQF) <= VQF_BRIDGE_STORAGE_BYTES, "VQF_BRIDGE_STORAGE_BYTES is too small for VQF");
static_assert(alignof(VQF) <= alignof(double), "VQF needs a stricter alignment than double");

static VQF *object(vqf_bridge_t *filter) { return reinterpret_cast<VQF *>(filter->storage.bytes); }

static const VQF *object(const vqf_bridge_t *filter) {
    return reinterpret_cast<const VQF *>(filter->storage.bytes);
}

extern "C" void vqf_bridge_init(vqf_bridge_t *filter, float gyr_ts, float tau_acc, float tau_mag) {
    VQFParams params;
    params.tauAcc = tau_acc;
    params.tauMag = tau_mag;
    // VQF has only plain members and a trivial destructor, so the storage can be reused (and
    // copied) without destroying the previous object.
    new (filter->storage.bytes) VQF(params, gyr_ts);
}

extern "C" void vqf_bridge_update(vqf_bridge_t *filter, const float gyr[3], const float acc[3], const float *mag) {
    if (mag != nullptr) {
        object(filter)->update(gyr, acc, mag);
    } else {
        object(filter)->update(gyr, acc);
    }
}

extern "C" void vqf_bridge_quat6d(const vqf_bridge_t *filter, float out[4]) { object(filter)->getQuat6D(out); }

extern "C" void vqf_bridge_quat9d(const vqf_bridge_t *filter, float out[4]) { object(filter)->getQuat9D(out); }

extern "C" void vqf_bridge_bias(const vqf_bridge_t *filter, float out[3]) { object(filter)->getBiasEstimate(out); }
