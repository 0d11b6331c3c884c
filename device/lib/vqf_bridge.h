/* The "vqf" filter on the device: a C interface to VQF's own C++ implementation (Laidig and Seel,
 * MIT), built in float32 (VQF_SINGLE_PRECISION) from the source distribution of the vqf package
 * the server pins, so device and server run the same algorithm.
 *
 * The VQF object lives inside vqf_bridge_t (no heap). It is plain data: copying a vqf_bridge_t
 * copies the filter's whole state, which is how a caller saves and restores it.
 */
#ifndef VQF_BRIDGE_H
#define VQF_BRIDGE_H

#ifdef __cplusplus
extern "C" {
#endif

/* sizeof(VQF) in float32 is 856 bytes on x86-64 and on Cortex-M (checked at compile time). */
#define VQF_BRIDGE_STORAGE_BYTES 896

typedef struct {
    union {
        double alignment; /* VQF keeps double filter states: align as double */
        unsigned char bytes[VQF_BRIDGE_STORAGE_BYTES];
    } storage;
} vqf_bridge_t;

/* A new filter at sample period gyr_ts (s) with the given time constants (s); every other VQF
 * parameter at VQF's defaults, which are the server's. */
void vqf_bridge_init(vqf_bridge_t *filter, float gyr_ts, float tau_acc, float tau_mag);

/* One sample: gyroscope (rad/s), accelerometer (m/s^2), magnetometer (any unit) or NULL. */
void vqf_bridge_update(vqf_bridge_t *filter, const float gyr[3], const float acc[3], const float *mag);

/* Orientation without (6D) and with (9D) the magnetometer, scalar first, sensor to earth (ENU). */
void vqf_bridge_quat6d(const vqf_bridge_t *filter, float out[4]);
void vqf_bridge_quat9d(const vqf_bridge_t *filter, float out[4]);

/* The gyroscope bias estimate, rad/s. */
void vqf_bridge_bias(const vqf_bridge_t *filter, float out[3]);

#ifdef __cplusplus
}
#endif

#endif
