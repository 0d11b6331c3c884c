#include "kalman.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fusion_text.h"

enum { KIND_ORIENTATION, KIND_KF, KIND_WEIGHTED };

#define GRAVITY 9.80665
#define DEGREES FR(57.295779513082320876798)
#define ACC_MEDIAN_LOW_G 0.4
#define ACC_MEDIAN_HIGH_G 2.5
#define MAX_PLAUSIBLE_GYRO_RAD_S 35.0
#define MAX_ACC_M_S2 1e6
#define MAX_GYR_RAD_S 1e5
#define N_MAX KALMAN_MAX_WINDOW_SAMPLES

static const char *const AXIS_NAMES[KALMAN_DECLARED_AXES] = {"accX", "accY", "accZ", "gyrX", "gyrY",
                                                             "gyrZ", "magX", "magY", "magZ"};

/* --- messages ------------------------------------------------------------------------------ */

typedef struct {
    char *text;
    size_t length;
} message_t;

static message_t message_start(kalman_t *block) {
    message_t m = {block->message, 0};
    block->message[0] = '\0';
    return m;
}

static void put_char(message_t *m, char c) {
    if (m->length + 1 < FUSION_MESSAGE_CAPACITY) {
        m->text[m->length++] = c;
        m->text[m->length] = '\0';
    }
}

static void put_text(message_t *m, const char *text) {
    for (; text != NULL && *text != '\0'; text++) {
        put_char(m, *text);
    }
}

/* At most `limit` characters of a user's text, quoted. */
static void put_quoted(message_t *m, const char *text, size_t limit) {
    put_char(m, '\'');
    size_t i = 0;
    for (; text != NULL && text[i] != '\0' && i < limit; i++) {
        put_char(m, text[i]);
    }
    if (text != NULL && text[i] != '\0') {
        put_text(m, "...");
    }
    put_char(m, '\'');
}

static void put_size(message_t *m, size_t value) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0 && n < 24);
    while (n > 0) {
        put_char(m, digits[--n]);
    }
}

/* `value` as printf's %.<significant>g would write it, significant <= 9 (error paths only). */
static void put_number(message_t *m, double value, int significant) {
    if (value != value) {
        put_text(m, "nan");
        return;
    }
    if (value < 0.0) {
        put_char(m, '-');
        value = -value;
    }
    if (value > 1.7976931348623157e308) {
        put_text(m, "inf");
        return;
    }
    if (value == 0.0) {
        put_char(m, '0');
        return;
    }
    int exponent = 0;
    double x = value;
    while (x >= 10.0) {
        x /= 10.0;
        exponent++;
    }
    while (x < 1.0) {
        x *= 10.0;
        exponent--;
    }
    uint32_t limit = 1;
    for (int i = 0; i < significant; i++) limit *= 10u;
    uint32_t digits_value = (uint32_t)(x * (double)(limit / 10u) + 0.5);
    if (digits_value >= limit) {
        digits_value /= 10u;
        exponent++;
    }
    char digits[20];
    for (int i = significant - 1; i >= 0; i--) {
        digits[i] = (char)('0' + digits_value % 10u);
        digits_value /= 10u;
    }
    int used = significant;
    while (used > 1 && digits[used - 1] == '0') used--;
    if (exponent < -4 || exponent >= significant) {
        put_char(m, digits[0]);
        if (used > 1) {
            put_char(m, '.');
            for (int i = 1; i < used; i++) put_char(m, digits[i]);
        }
        put_char(m, 'e');
        put_char(m, exponent < 0 ? '-' : '+');
        int e = exponent < 0 ? -exponent : exponent;
        if (e < 10) put_char(m, '0');
        put_size(m, (size_t)e);
    } else if (exponent >= 0) {
        for (int i = 0; i <= exponent; i++) put_char(m, i < used ? digits[i] : '0');
        if (used > exponent + 1) {
            put_char(m, '.');
            for (int i = exponent + 1; i < used; i++) put_char(m, digits[i]);
        }
    } else {
        put_text(m, "0.");
        for (int i = 0; i < -exponent - 1; i++) put_char(m, '0');
        for (int i = 0; i < used; i++) put_char(m, digits[i]);
    }
}

static int fail(kalman_t *block, int code, const char *text) {
    message_t m = message_start(block);
    put_text(&m, text);
    return code;
}

/* A refused setting: `text` then the value given, as the server words it. */
static int refuse_number(kalman_t *block, const char *text, double value) {
    message_t m = message_start(block);
    put_text(&m, text);
    put_number(&m, value, 6);
    put_char(&m, '.');
    return FUSION_ERR_PARAMETER;
}

/* The state of kf or weighted left the finite numbers (the server's encode_state refuses it). */
static int state_error(kalman_t *block) {
    message_t m = message_start(block);
    put_text(&m, "The ");
    put_text(&m, block->filter_name);
    put_text(&m, " state became non-finite on this window; check the input's units and values.");
    return FUSION_ERR_STATE;
}

/* --- small helpers ------------------------------------------------------------------------- */

static bool finite(fusion_real_t x) { return isfinite(x); }

static bool all_finite(const fusion_real_t *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return false;
    }
    return true;
}

/* Python's int(round(x)) for x >= 0: halves to even. */
static size_t round_half_even(double x) {
    if (!(x >= 0.0)) return 0;
    if (x >= (double)(SIZE_MAX / 2)) return SIZE_MAX;
    size_t whole = (size_t)x;
    double fraction = x - (double)whole;
    if (fraction > 0.5 || (fraction == 0.5 && (whole & 1u))) whole++;
    return whole;
}

/* Reads samples [start, start + count) of the window into block->raw. */
static int read_samples(kalman_t *block, const fusion_window_t *window, size_t start, size_t count) {
    if (window->read(window->context, start * block->input_axes, count * block->input_axes, block->raw) != 0) {
        return fail(block, FUSION_ERR_READ, "The window reader failed.");
    }
    return FUSION_OK;
}

static size_t chunk_at(const kalman_t *block, size_t start, size_t n) {
    size_t left = n - start;
    return left < block->chunk_samples ? left : block->chunk_samples;
}

/* Sum of x[0..n) in blocks of 32 (far less rounding than one running float32 sum). */
static fusion_real_t sum_of(const fusion_real_t *x, size_t n) {
    fusion_real_t total = FR(0.0);
    for (size_t start = 0; start < n; start += 32) {
        size_t end = start + 32 < n ? start + 32 : n;
        fusion_real_t part = FR(0.0);
        for (size_t i = start; i < end; i++) part += x[i];
        total += part;
    }
    return total;
}

/* Population std of x around `mean`, two-pass as numpy. */
static fusion_real_t std_around(const fusion_real_t *x, size_t n, fusion_real_t mean) {
    fusion_real_t total = FR(0.0);
    for (size_t start = 0; start < n; start += 32) {
        size_t end = start + 32 < n ? start + 32 : n;
        fusion_real_t part = FR(0.0);
        for (size_t i = start; i < end; i++) {
            fusion_real_t d = x[i] - mean;
            part += d * d;
        }
        total += part;
    }
    return fr_sqrt(total / (fusion_real_t)n);
}

/* mean, std, min, max: sum and extremes in one pass, the deviations in a second. */
static void plain_statistics(const fusion_real_t *x, size_t n, float *out) {
    fusion_real_t low = x[0], high = x[0], total = FR(0.0);
    for (size_t start = 0; start < n; start += 32) {
        size_t end = start + 32 < n ? start + 32 : n;
        fusion_real_t part = FR(0.0);
        for (size_t i = start; i < end; i++) {
            fusion_real_t v = x[i];
            part += v;
            low = v < low ? v : low;
            high = v > high ? v : high;
        }
        total += part;
    }
    fusion_real_t mean = total / (fusion_real_t)n;
    out[0] = (float)mean;
    out[1] = (float)std_around(x, n, mean);
    out[2] = (float)low;
    out[3] = (float)high;
}

/* Roll and yaw: circular mean, then statistics of the wrap-aware deviations from it, as the
 * server's (a - mean + 180) % 360 - 180 with Python's % (angle and mean are within +-180, so
 * one step of 360 at most). The deviations overwrite the angles. */
static void circular_statistics(fusion_real_t *angle, size_t n, fusion_real_t sin_sum, fusion_real_t cos_sum,
                                float *out) {
    fusion_real_t mean = fr_atan2(sin_sum / (fusion_real_t)n, cos_sum / (fusion_real_t)n) * DEGREES;
    for (size_t i = 0; i < n; i++) {
        fusion_real_t x = angle[i] - mean + FR(180.0);
        while (x < FR(0.0)) x += FR(360.0);
        while (x >= FR(360.0)) x -= FR(360.0);
        angle[i] = x - FR(180.0);
    }
    plain_statistics(angle, n, out);
    out[0] = (float)(mean + (fusion_real_t)out[0]);
    out[2] = (float)(mean + (fusion_real_t)out[2]);
    out[3] = (float)(mean + (fusion_real_t)out[3]);
}

/* The k-th smallest of a[0..n) (Wirth's selection: equal values split evenly), a reordered so
 * that a[0..k) <= a[k]. */
static fusion_real_t select_kth(fusion_real_t *a, size_t n, size_t k) {
    ptrdiff_t l = 0, r = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
    while (l < r) {
        fusion_real_t pivot = a[kk];
        ptrdiff_t i = l, j = r;
        do {
            while (a[i] < pivot) i++;
            while (pivot < a[j]) j--;
            if (i <= j) {
                fusion_real_t t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < kk) l = i;
        if (kk < i) r = j;
    }
    return a[kk];
}

/* --- init ---------------------------------------------------------------------------------- */

static const char *const FILTER_NAMES[] = {"ekf", "complementary", "madgwick", "mahony", "vqf", "kf", "weighted"};

/* The orientation filters' parameters (orientation._SETTINGS through kalman.ORIENTATION_PARAMETERS),
 * in parameters.json order: range, and for the deprecated per-sample ones (text, empty when not
 * used) the parameter they replace. */
typedef struct {
    unsigned char filter;       /* orientation_filter_t */
    unsigned short offset;      /* of the field in kalman_params_t */
    float low, high;
    const char *range;          /* "between <low> and <high>" as the server writes it */
    const char *replaces;       /* deprecated text parameter: its replacement; else NULL */
} setting_spec_t;

#define SETTING(filter, field, low, high, range, replaces) \
    {filter, (unsigned short)offsetof(kalman_params_t, field), low, high, range, replaces}

static const setting_spec_t SETTINGS[] = {
    SETTING(ORIENTATION_COMPLEMENTARY, complementary_time_constant, 1e-3f, 1e4f, "0.001 and 10000.0", NULL),
    SETTING(ORIENTATION_COMPLEMENTARY, complementary_heading_time_constant, 1e-3f, 1e4f, "0.001 and 10000.0", NULL),
    SETTING(ORIENTATION_COMPLEMENTARY, complementary_alpha, 0.0f, 1.0f, "0.0 and 1.0", "complementary-time-constant"),
    SETTING(ORIENTATION_COMPLEMENTARY, complementary_alpha_mag, 0.0f, 1.0f, "0.0 and 1.0",
            "complementary-heading-time-constant"),
    SETTING(ORIENTATION_MADGWICK, madgwick_beta, 0.0f, 10.0f, "0.0 and 10.0", NULL),
    SETTING(ORIENTATION_MAHONY, mahony_time_constant, 1e-3f, 1e4f, "0.001 and 10000.0", NULL),
    SETTING(ORIENTATION_MAHONY, mahony_integral_time, 0.0f, 1e6f, "0.0 and 1000000.0", NULL),
    SETTING(ORIENTATION_MAHONY, mahony_kp, 0.0f, 100.0f, "0.0 and 100.0", "mahony-time-constant"),
    SETTING(ORIENTATION_MAHONY, mahony_ki, 0.0f, 100.0f, "0.0 and 100.0", "mahony-integral-time"),
    SETTING(ORIENTATION_EKF, ekf_gyro_noise, 1e-9f, 10.0f, "1e-09 and 10.0", NULL),
    SETTING(ORIENTATION_EKF, ekf_bias_walk, 0.0f, 1.0f, "0.0 and 1.0", NULL),
    SETTING(ORIENTATION_EKF, ekf_acc_noise, 1e-9f, 100.0f, "1e-09 and 100.0", NULL),
    SETTING(ORIENTATION_EKF, ekf_mag_noise, 1e-9f, 100.0f, "1e-09 and 100.0", NULL),
    SETTING(ORIENTATION_VQF, vqf_tau_acc, 0.0f, 1e4f, "0.0 and 10000.0", NULL),
    SETTING(ORIENTATION_VQF, vqf_tau_mag, 0.0f, 1e4f, "0.0 and 10000.0", NULL),
};
#define SETTING_COUNT (sizeof SETTINGS / sizeof SETTINGS[0])
/* The parameter names, in the table's order (kept apart so the table stays constant data). */
static const char *const SETTING_PARAMS[SETTING_COUNT] = {
    "complementary-time-constant", "complementary-heading-time-constant", "complementary-alpha",
    "complementary-alpha-mag", "madgwick-beta", "mahony-time-constant", "mahony-integral-time", "mahony-kp",
    "mahony-ki", "ekf-gyro-noise", "ekf-bias-walk", "ekf-acc-noise", "ekf-mag-noise", "vqf-tau-acc", "vqf-tau-mag"};

/* The selected filter's settings, checked as the server checks them (every deprecated text
 * parsed first, then every range, in parameter order); values[i] < 0 marks an empty deprecated
 * setting. */
static int init_orientation_settings(kalman_t *block, const kalman_params_t *p) {
    double values[4];
    size_t first = SETTING_COUNT, count = 0;
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (SETTINGS[i].filter != (unsigned char)block->filter) continue;
        if (first == SETTING_COUNT) first = i;
        const char *field = (const char *)p + SETTINGS[i].offset;
        double *value = &values[count++];
        if (SETTINGS[i].replaces == NULL) {
            *value = (double)*(const float *)(const void *)field;
            continue;
        }
        const char *text = *(const char *const *)(const void *)field;
        double parsed[2];
        int numbers = fusion_parse_numbers(text, parsed, 2);
        *value = numbers == 0 ? -1.0 : parsed[0];
        if (numbers != 0 && numbers != 1) {
            message_t m = message_start(block);
            put_text(&m, "Parameter '");
            put_text(&m, SETTING_PARAMS[i]);
            put_text(&m, "' must be a number or empty, got ");
            put_quoted(&m, text, 24);
            put_text(&m, " (deprecated: use '");
            put_text(&m, SETTINGS[i].replaces);
            put_text(&m, "', in seconds).");
            return FUSION_ERR_PARAMETER;
        }
    }
    for (size_t k = 0; k < count; k++) {
        const setting_spec_t *spec = &SETTINGS[first + k];
        double value = values[k];
        if (spec->replaces != NULL && value == -1.0 && fusion_text_blank(*(const char *const *)(const void *)(
                                                              (const char *)p + spec->offset))) {
            continue;
        }
        if (!(isfinite(value) && value >= (double)spec->low && value <= (double)spec->high)) {
            message_t m = message_start(block);
            put_text(&m, "Parameter '");
            put_text(&m, SETTING_PARAMS[first + k]);
            put_text(&m, "' must be between ");
            put_text(&m, spec->range);
            put_text(&m, ", got ");
            put_number(&m, value, 6);
            put_char(&m, '.');
            return FUSION_ERR_PARAMETER;
        }
    }
    orientation_settings_t s;
    orientation_default_settings(&s);
    switch (block->filter) {
    case ORIENTATION_COMPLEMENTARY:
        s.tau = values[0];
        s.tau_mag = values[1];
        s.alpha = values[2];
        s.alpha_mag = values[3];
        break;
    case ORIENTATION_MADGWICK:
        s.beta = values[0];
        break;
    case ORIENTATION_MAHONY:
        /* kp = 1 / tau and ki = kp / integral time, unless the deprecated gains are given. */
        s.kp = values[2] >= 0.0 ? values[2] : 1.0 / values[0];
        s.ki = values[3] >= 0.0 ? values[3] : (values[1] > 0.0 ? s.kp / values[1] : 0.0);
        break;
    case ORIENTATION_EKF:
        s.gyro_noise = values[0];
        s.bias_walk = values[1];
        s.acc_noise = values[2];
        s.mag_noise = values[3];
        break;
    case ORIENTATION_VQF:
        block->vqf_tau_acc = (float)values[0];
        block->vqf_tau_mag = (float)values[1];
        break;
    }
    orientation_configure(&block->orientation, block->filter, &s, block->sampling_freq);
    return FUSION_OK;
}

static int init_axes(kalman_t *block, const int columns[KALMAN_DECLARED_AXES], size_t input_axes) {
    if (input_axes == 0 || columns == NULL) {
        return fail(block, FUSION_ERR_AXES, "No input axes, or no columns.");
    }
    if (input_axes > KALMAN_CHUNK_VALUES) {
        return fail(block, FUSION_ERR_CAPACITY, "More input axes than KALMAN_CHUNK_VALUES.");
    }
    block->input_axes = input_axes;
    block->chunk_samples = KALMAN_CHUNK_VALUES / input_axes;
    if (block->chunk_samples > KALMAN_CHUNK_SAMPLES) block->chunk_samples = KALMAN_CHUNK_SAMPLES;
    block->mapped = 0;
    for (int i = 0; i < KALMAN_DECLARED_AXES; i++) {
        int column = columns[i];
        if (column < -1 || (column >= 0 && (size_t)column >= input_axes)) {
            message_t m = message_start(block);
            put_text(&m, "Axis ");
            put_text(&m, AXIS_NAMES[i]);
            put_text(&m, " is mapped to a column outside the input's axes.");
            return FUSION_ERR_AXES;
        }
        block->columns[i] = column;
        if (column >= 0) {
            block->mapped_axis[block->mapped] = (unsigned char)i;
            block->mapped_column[block->mapped] = column;
            block->mapped++;
        }
    }
    if (columns[0] < 0 || columns[1] < 0 || columns[2] < 0) {
        return fail(block, FUSION_ERR_AXES, "This block needs accX, accY and accZ mapped to input axes.");
    }
    if (block->kind != KIND_ORIENTATION) return FUSION_OK;
    message_t m = message_start(block);
    bool missing = false;
    for (int i = 0; i < 6; i++) {
        if (columns[i] < 0) {
            if (!missing) {
                put_text(&m, "Filter '");
                put_text(&m, block->filter_name);
                put_text(&m, "' needs the accelerometer and the gyroscope (gyrX, gyrY, gyrZ); missing: ");
            } else {
                put_text(&m, ", ");
            }
            put_text(&m, AXIS_NAMES[i]);
            missing = true;
        }
    }
    if (missing) {
        put_text(&m, ". Or choose filter 'kf' or 'weighted'.");
        return FUSION_ERR_AXES;
    }
    int mags = (columns[6] >= 0) + (columns[7] >= 0) + (columns[8] >= 0);
    if (mags != 0 && mags != 3) {
        put_text(&m, "The magnetometer needs all three axes; missing: ");
        bool first = true;
        for (int i = 6; i < 9; i++) {
            if (columns[i] < 0) {
                if (!first) put_text(&m, ", ");
                put_text(&m, AXIS_NAMES[i]);
                first = false;
            }
        }
        put_text(&m, ". Map all three, or none.");
        return FUSION_ERR_AXES;
    }
    block->message[0] = '\0';
    block->has_mag = mags == 3;
    return FUSION_OK;
}

static int init_kf(kalman_t *block, const kalman_params_t *p) {
    if (!(isfinite(p->kf_process_noise) && p->kf_process_noise > 0.0f)) {
        return refuse_number(block, "The Kalman process noise Q must be a positive number; got ", (double)p->kf_process_noise);
    }
    if (!(isfinite(p->kf_measurement_noise) && p->kf_measurement_noise > 0.0f)) {
        return refuse_number(block, "The Kalman measurement noise R must be a positive number; got ", (double)p->kf_measurement_noise);
    }
    cv_model_init(&block->cv, (double)block->sampling_freq, (double)p->kf_process_noise,
                  (double)p->kf_measurement_noise);
    block->rts = p->kf_rts;
    return FUSION_OK;
}

static void put_mapped_axes(kalman_t *block, message_t *m) {
    for (size_t i = 0; i < block->mapped; i++) {
        if (i) put_text(m, ", ");
        put_text(m, AXIS_NAMES[block->mapped_axis[i]]);
    }
}

static int init_weighted(kalman_t *block, const kalman_params_t *p) {
    double given[KALMAN_DECLARED_AXES];
    int count = fusion_parse_numbers(p->weighted_variances, given, KALMAN_DECLARED_AXES);
    if (count < 0) {
        message_t m = message_start(block);
        put_text(&m, "'weighted-variances' must be numbers separated by commas, one per axis (");
        put_mapped_axes(block, &m);
        put_text(&m, ").");
        return FUSION_ERR_PARAMETER;
    }
    if (!(isfinite(p->weighted_memory) && p->weighted_memory > 0.0f)) {
        return refuse_number(block, "'weighted-memory' must be a positive number of seconds; got ", (double)p->weighted_memory);
    }
    double memory = (double)p->weighted_memory * (double)block->sampling_freq;
    block->memory_samples = (fusion_real_t)(memory > 1.0 ? memory : 1.0);
    block->given_variances = count > 0;
    if (count == 0) return FUSION_OK;
    if ((size_t)count != block->mapped) {
        message_t m = message_start(block);
        put_text(&m, "Weighted fusion got ");
        put_size(&m, (size_t)count);
        put_text(&m, " sensor variances for ");
        put_size(&m, block->mapped);
        put_text(&m, " sensors; give one per sensor, in the order of the axes (");
        put_mapped_axes(block, &m);
        put_text(&m, ").");
        return FUSION_ERR_PARAMETER;
    }
    for (int i = 0; i < count; i++) {
        if (!(isfinite(given[i]) && given[i] > 0.0)) {
            return fail(block, FUSION_ERR_PARAMETER, "Sensor variances must be positive numbers (units squared).");
        }
        block->variances[i] = (fusion_real_t)given[i];
    }
    return FUSION_OK;
}

size_t kalman_instance_size(void) { return sizeof(kalman_t); }

static int init_settings(kalman_t *block, const kalman_params_t *p, float sampling_freq,
                         const int columns[KALMAN_DECLARED_AXES], size_t input_axes) {
    if (p == NULL) return fail(block, FUSION_ERR_PARAMETER, "No parameters given.");
    int filter = -1;
    for (int i = 0; i < 7; i++) {
        if (fusion_text_equals(p->filter, FILTER_NAMES[i])) filter = i;
    }
    if (filter < 0) {
        message_t m = message_start(block);
        put_text(&m, "Parameter 'filter' must be one of 'ekf', 'complementary', 'madgwick', 'mahony', 'vqf', "
                     "'kf', 'weighted'; got ");
        put_quoted(&m, p->filter, 24);
        put_char(&m, '.');
        return FUSION_ERR_PARAMETER;
    }
#if !KALMAN_WITH_VQF
    if (fusion_text_equals(p->filter, "vqf")) {
        return fail(block, FUSION_ERR_UNSUPPORTED,
                    "This firmware was built without the vqf filter (KALMAN_WITH_VQF=0); choose another filter.");
    }
#endif
    static const orientation_filter_t orientation_filters[5] = {ORIENTATION_EKF, ORIENTATION_COMPLEMENTARY,
                                                                ORIENTATION_MADGWICK, ORIENTATION_MAHONY,
                                                                ORIENTATION_VQF};
    block->filter_name = FILTER_NAMES[filter];
    block->kind = filter < 5 ? KIND_ORIENTATION : (filter == 5 ? KIND_KF : KIND_WEIGHTED);
    block->filter = filter < 5 ? orientation_filters[filter] : ORIENTATION_EKF;
    bool acc_g = fusion_text_equals(p->acc_units, "g");
    if (!acc_g && !fusion_text_equals(p->acc_units, "m/s^2")) {
        message_t m = message_start(block);
        put_text(&m, "Parameter 'acc-units' must be one of 'm/s^2', 'g'; got ");
        put_quoted(&m, p->acc_units, 24);
        put_char(&m, '.');
        return FUSION_ERR_PARAMETER;
    }
    bool gyr_deg = fusion_text_equals(p->gyro_units, "deg/s");
    if (!gyr_deg && !fusion_text_equals(p->gyro_units, "rad/s")) {
        message_t m = message_start(block);
        put_text(&m, "Parameter 'gyro-units' must be one of 'rad/s', 'deg/s'; got ");
        put_quoted(&m, p->gyro_units, 24);
        put_char(&m, '.');
        return FUSION_ERR_PARAMETER;
    }
    block->acc_in_g = acc_g;
    block->gyr_in_deg = gyr_deg;
    block->acc_scale = acc_g ? (fusion_real_t)GRAVITY : FR(1.0);
    block->gyr_scale = gyr_deg ? (fusion_real_t)(3.14159265358979323846 / 180.0) : FR(1.0);
    if (!(isfinite(sampling_freq) && sampling_freq > 0.0f)) {
        return refuse_number(block, "The sampling frequency must be a positive number of Hz; got ", (double)sampling_freq);
    }
    block->sampling_freq = (fusion_real_t)sampling_freq;
    int code = init_axes(block, columns, input_axes);
    if (code != FUSION_OK) return code;
    if (block->kind == KIND_ORIENTATION) {
        code = init_orientation_settings(block, p);
    } else if (block->kind == KIND_KF) {
        code = init_kf(block, p);
    } else {
        code = init_weighted(block, p);
    }
    if (code != FUSION_OK) return code;
    float increase_ms = p->window_increase_ms;
    if (!(isfinite(increase_ms) && increase_ms >= 0.0f)) {
        return refuse_number(block, "Parameter 'window-increase-ms' must be 0 or the impulse's window increase in ms; got ", (double)increase_ms);
    }
    block->increase = round_half_even((double)increase_ms * (double)sampling_freq / 1000.0);
    size_t init = round_half_even(0.1 * (double)sampling_freq);
    block->init_samples = init > 0 ? init : 1;
    if (block->kind == KIND_ORIENTATION) {
        bool has_bias = block->filter == ORIENTATION_EKF || block->filter == ORIENTATION_MAHONY ||
                        block->filter == ORIENTATION_VQF;
        block->feature_count = 8 + (block->has_mag ? 4u : 0u) + (has_bias ? 3u : 0u) + 1u;
    } else if (block->kind == KIND_KF) {
        block->feature_count = 6 * block->mapped;
    } else {
        block->feature_count = 5 + 2 * block->mapped;
    }
    return FUSION_OK;
}

int kalman_init(kalman_t *block, const kalman_params_t *params, float sampling_freq,
                const int columns[KALMAN_DECLARED_AXES], size_t input_axes) {
    if (block == NULL) return FUSION_ERR_PARAMETER;
    memset(block, 0, sizeof *block);
    int code = init_settings(block, params, sampling_freq, columns, input_axes);
    if (code != FUSION_OK) {
        block->ready = false;
        block->feature_count = 0;
        return code;
    }
    block->ready = true;
    block->message[0] = '\0';
    kalman_reset(block);
    return FUSION_OK;
}

void kalman_reset(kalman_t *block) {
    if (block == NULL || !block->ready) return;
    memset(&block->stream, 0, sizeof block->stream);
    block->stream.started = false;
#if KALMAN_WITH_VQF
    if (block->kind == KIND_ORIENTATION && block->filter == ORIENTATION_VQF) {
        vqf_bridge_init(&block->stream.u.orientation.vqf, (float)block->orientation.dt, block->vqf_tau_acc,
                        block->vqf_tau_mag);
    }
#endif
    block->saved = block->stream;
    block->message[0] = '\0';
}

size_t kalman_feature_count(const kalman_t *block) { return block != NULL && block->ready ? block->feature_count : 0; }

const char *kalman_message(const kalman_t *block) { return block != NULL ? block->message : ""; }

/* --- the window: checks every filter shares ----------------------------------------------- */

/* The first non-finite mapped value of one sample (row), if any: its axis index in `mapped`. */
static int first_non_finite(const kalman_t *block, const float *row) {
    for (size_t a = 0; a < block->mapped; a++) {
        if (!isfinite(row[block->mapped_column[a]])) return (int)a;
    }
    return -1;
}

static int non_finite_error(kalman_t *block, int axis, size_t sample) {
    message_t m = message_start(block);
    put_text(&m, "Axis ");
    put_text(&m, AXIS_NAMES[block->mapped_axis[axis]]);
    put_text(&m, " has a NaN or infinite value at sample ");
    put_size(&m, sample);
    put_text(&m, "; send finite numbers (interpolate gaps before this block).");
    return FUSION_ERR_INPUT;
}

/* Every mapped value finite, as the server checks before anything else. */
static int check_finite(kalman_t *block, const fusion_window_t *window, size_t n) {
    for (size_t start = 0; start < n; start += block->chunk_samples) {
        size_t count = chunk_at(block, start, n);
        int code = read_samples(block, window, start, count);
        if (code != FUSION_OK) return code;
        for (size_t i = 0; i < count; i++) {
            int axis = first_non_finite(block, block->raw + i * block->input_axes);
            if (axis >= 0) return non_finite_error(block, axis, start + i);
        }
    }
    return FUSION_OK;
}

/* Scaled acc, gyr (and mag) of samples [start, start + count) into the block's chunk arrays. */
static void scale_chunk(kalman_t *block, size_t count) {
    const int *c = block->columns;
    for (size_t i = 0; i < count; i++) {
        const float *row = block->raw + i * block->input_axes;
        for (int k = 0; k < 3; k++) {
            block->acc[i][k] = (fusion_real_t)row[c[k]] * block->acc_scale;
            block->gyr[i][k] = (fusion_real_t)row[c[3 + k]] * block->gyr_scale;
        }
        if (block->has_mag) {
            for (int k = 0; k < 3; k++) block->mag[i][k] = (fusion_real_t)row[c[6 + k]];
        }
    }
}

/* --- orientation --------------------------------------------------------------------------- */

/* The median of the norms whose squares are n2[0..n) (numpy's median; reorders n2). */
static double median_norm(fusion_real_t *n2, size_t n) {
    size_t k = n / 2;
    fusion_real_t upper = select_kth(n2, n, k);
    if (n % 2 == 1) return (double)fr_sqrt(upper);
    fusion_real_t lower = n2[0];
    for (size_t i = 1; i < k; i++) {
        if (n2[i] > lower) lower = n2[i];
    }
    return ((double)fr_sqrt(lower) + (double)fr_sqrt(upper)) / 2.0;
}

/* Whether the median of n values is surely >= a threshold, given `below` values under it (or
 * surely <= it, given `above` values over it): false when it may not be (then the exact median
 * decides). */
static bool median_surely_within(size_t n, size_t outside) { return n % 2 == 1 ? outside <= n / 2 : outside + 1 <= n / 2; }

/* What one orientation window found, checked in the server's order once the window has run. */
typedef struct {
    size_t bad_sample;      /* first sample with a non-finite mapped value (n: none) */
    int bad_axis;
    size_t acc_low, acc_high, gyr_fast; /* norms beyond the units thresholds */
    bool mag_seen;          /* a magnetometer value other than 0 */
    fusion_real_t acc_max, gyr_max;     /* largest |component| among samples whose norm exceeds the limit */
    bool start_zero;        /* the stream's start averaged a zero accelerometer */
    bool diverged;          /* a non-finite orientation */
} orientation_scan_t;

static int orientation_checks(kalman_t *block, const fusion_window_t *window, size_t n, bool lead_only,
                              orientation_scan_t *scan) {
    if (scan->bad_sample < n) {
        /* The non-finite value the scan saw first may have been flagged through a norm of finite
         * but huge values: the exact check decides. */
        for (size_t start = scan->bad_sample; start < n; start += block->chunk_samples) {
            size_t count = chunk_at(block, start, n);
            int code = read_samples(block, window, start, count);
            if (code != FUSION_OK) return code;
            for (size_t i = 0; i < count; i++) {
                int axis = first_non_finite(block, block->raw + i * block->input_axes);
                if (axis >= 0) return non_finite_error(block, axis, start + i);
            }
        }
    }
    if (!lead_only) {
        fusion_real_t *acc_n2 = block->scratch + 3 * N_MAX, *gyr_n2 = block->scratch + 4 * N_MAX;
        if (!(median_surely_within(n, scan->acc_low) && median_surely_within(n, scan->acc_high))) {
            double median_g = median_norm(acc_n2, n) / GRAVITY;
            if (!(median_g >= ACC_MEDIAN_LOW_G && median_g <= ACC_MEDIAN_HIGH_G)) {
                message_t m = message_start(block);
                double stated = block->acc_in_g ? median_g : median_g * GRAVITY;
                put_text(&m, "The accelerometer's median magnitude over this window is ");
                put_number(&m, stated, 3);
                put_text(&m, block->acc_in_g ? " g" : " m/s^2");
                put_text(&m, ", far from gravity (1 g = 9.81 m/s^2).");
                if (!block->acc_in_g && median_g * GRAVITY >= 0.5 && median_g * GRAVITY <= 2.0) {
                    put_text(&m, " It looks like g: set 'Accelerometer units' to g.");
                } else if (block->acc_in_g && median_g / GRAVITY >= 0.5 && median_g / GRAVITY <= 2.0) {
                    put_text(&m, " It looks like m/s^2: set 'Accelerometer units' to m/s^2.");
                } else {
                    put_text(&m, " Check the axis mapping and scaling.");
                }
                return FUSION_ERR_INPUT;
            }
        }
        if (!median_surely_within(n, scan->gyr_fast)) {
            double median_rate = median_norm(gyr_n2, n);
            if (median_rate > MAX_PLAUSIBLE_GYRO_RAD_S) {
                message_t m = message_start(block);
                put_text(&m, "The gyroscope's median rate over this window is ");
                put_number(&m, median_rate, 3);
                put_text(&m, " rad/s, beyond any MEMS gyroscope (35 rad/s).");
                put_text(&m, block->gyr_in_deg ? " Check the gyroscope's scaling."
                                               : " It looks like deg/s: set 'Gyroscope units' to deg/s.");
                return FUSION_ERR_INPUT;
            }
        }
        if (block->has_mag && !scan->mag_seen) {
            return fail(block, FUSION_ERR_INPUT,
                        "The magnetometer reads 0 on every axis for the whole window: no heading. Check the "
                        "sensor, or leave magX-Z unmapped.");
        }
    }
    if ((double)scan->acc_max > MAX_ACC_M_S2) {
        message_t m = message_start(block);
        put_text(&m, "The accelerometer reads up to ");
        put_number(&m, (double)scan->acc_max, 3);
        put_text(&m, " m/s^2, beyond any real sensor (1e+06 m/s^2); check its units.");
        return FUSION_ERR_INPUT;
    }
    if ((double)scan->gyr_max > MAX_GYR_RAD_S) {
        message_t m = message_start(block);
        put_text(&m, "The gyroscope reads up to ");
        put_number(&m, (double)scan->gyr_max, 3);
        put_text(&m, " rad/s, beyond any real sensor (1e+05 rad/s); check its units.");
        return FUSION_ERR_INPUT;
    }
    if (scan->start_zero) {
        return fail(block, FUSION_ERR_INPUT,
                    "The accelerometer reads zero at the start of the stream; the tilt cannot be initialised.");
    }
    const orientation_state_t *st = &block->stream.u.orientation.filter;
    bool has_bias = block->filter == ORIENTATION_EKF || block->filter == ORIENTATION_MAHONY ||
                    block->filter == ORIENTATION_VQF;
    if (scan->diverged || (has_bias && !all_finite(st->bias, 3)) ||
        (block->filter == ORIENTATION_EKF && !(all_finite(st->P, 21) && all_finite(st->mag_ref, 2)))) {
        message_t m = message_start(block);
        put_text(&m, "The ");
        put_text(&m, block->filter_name);
        put_text(&m, " filter left the valid range on this input; check the units (acc in m/s^2, gyr in rad/s) "
                     "and the sampling rate.");
        return FUSION_ERR_STATE;
    }
    return FUSION_OK;
}

/* The start of a stream: the orientation of the mean accelerometer (and magnetometer) reading
 * of the first 0.1 s of this window (or all of it, if shorter). */
static int start_orientation(kalman_t *block, const fusion_window_t *window, size_t n, bool *zero) {
    size_t count = block->init_samples < n ? block->init_samples : n;
    fusion_real_t a[3] = {FR(0.0), FR(0.0), FR(0.0)}, m[3] = {FR(0.0), FR(0.0), FR(0.0)};
    for (size_t start = 0; start < count; start += block->chunk_samples) {
        size_t chunk = chunk_at(block, start, count);
        int code = read_samples(block, window, start, chunk);
        if (code != FUSION_OK) return code;
        scale_chunk(block, chunk);
        fusion_real_t pa[3] = {FR(0.0), FR(0.0), FR(0.0)}, pm[3] = {FR(0.0), FR(0.0), FR(0.0)};
        for (size_t i = 0; i < chunk; i++) {
            for (int k = 0; k < 3; k++) {
                pa[k] += block->acc[i][k];
                if (block->has_mag) pm[k] += block->mag[i][k];
            }
        }
        for (int k = 0; k < 3; k++) {
            a[k] += pa[k];
            m[k] += pm[k];
        }
    }
    for (int k = 0; k < 3; k++) {
        a[k] /= (fusion_real_t)count;
        m[k] /= (fusion_real_t)count;
    }
    *zero = !(fr_sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]) > FR(0.0));
    fusion_real_t q0[4];
    quat_tilt_heading(a, block->has_mag ? m : NULL, q0);
    orientation_start(&block->orientation, &block->stream.u.orientation.filter, q0);
    return FUSION_OK;
}

/* vqf over one chunk, through VQF's own C++ (float32): quat6D, or quat9D with a magnetometer. */
static void run_vqf(kalman_t *block, size_t count) {
#if !KALMAN_WITH_VQF
    (void)block, (void)count;
#else
    orientation_state_t *st = &block->stream.u.orientation.filter;
    vqf_bridge_t *vqf = &block->stream.u.orientation.vqf;
    for (size_t i = 0; i < count; i++) {
        block->innovation[i] = orientation_innovation(st->q, st->bias, block->acc[i], block->gyr[i],
                                                      block->orientation.dt);
        float g[3], a[3], m[3], q[4], b[3];
        for (int k = 0; k < 3; k++) {
            g[k] = (float)block->gyr[i][k];
            a[k] = (float)block->acc[i][k];
            m[k] = (float)block->mag[i][k];
        }
        vqf_bridge_update(vqf, g, a, block->has_mag ? m : NULL);
        if (block->has_mag) {
            vqf_bridge_quat9d(vqf, q);
        } else {
            vqf_bridge_quat6d(vqf, q);
        }
        vqf_bridge_bias(vqf, b);
        for (int k = 0; k < 4; k++) st->q[k] = (fusion_real_t)q[k];
        for (int k = 0; k < 3; k++) st->bias[k] = (fusion_real_t)b[k];
        memcpy(block->quat[i], st->q, sizeof st->q);
    }
#endif
}

/* One pass over the window: the checks' raw material (non-finite values, the norms for the units
 * check, magnetometer seen, largest components), the filter, and the Euler angles for the
 * features; then the checks in the server's order, then the statistics. */
static int orientation_window(kalman_t *block, const fusion_window_t *window, size_t n, bool lead_only,
                              float *features) {
    orientation_scan_t scan = {n, -1, 0, 0, 0, false, FR(0.0), FR(0.0), false, false};
    int code;
    if (!block->stream.started) {
        code = start_orientation(block, window, n, &scan.start_zero);
        if (code != FUSION_OK) return code;
    }
    orientation_state_t *st = &block->stream.u.orientation.filter;
    fusion_real_t *roll = block->scratch, *pitch = block->scratch + N_MAX, *yaw = block->scratch + 2 * N_MAX;
    fusion_real_t *acc_n2 = block->scratch + 3 * N_MAX, *gyr_n2 = block->scratch + 4 * N_MAX;
    const fusion_real_t acc_low2 = (fusion_real_t)(ACC_MEDIAN_LOW_G * GRAVITY * ACC_MEDIAN_LOW_G * GRAVITY);
    const fusion_real_t acc_high2 = (fusion_real_t)(ACC_MEDIAN_HIGH_G * GRAVITY * ACC_MEDIAN_HIGH_G * GRAVITY);
    const fusion_real_t gyr_fast2 = (fusion_real_t)(MAX_PLAUSIBLE_GYRO_RAD_S * MAX_PLAUSIBLE_GYRO_RAD_S);
    const fusion_real_t acc_limit2 = (fusion_real_t)(MAX_ACC_M_S2 * MAX_ACC_M_S2);
    const fusion_real_t gyr_limit2 = (fusion_real_t)(MAX_GYR_RAD_S * MAX_GYR_RAD_S);
    bool has_mag = block->has_mag;
    fusion_real_t roll_sin = FR(0.0), roll_cos = FR(0.0), yaw_sin = FR(0.0), yaw_cos = FR(0.0), innovation2 = FR(0.0);
    for (size_t start = 0; start < n; start += block->chunk_samples) {
        size_t count = chunk_at(block, start, n);
        code = read_samples(block, window, start, count);
        if (code != FUSION_OK) return code;
        scale_chunk(block, count);
        for (size_t i = 0; i < count; i++) {
            const fusion_real_t *a = block->acc[i], *g = block->gyr[i], *m = block->mag[i];
            fusion_real_t a2 = a[0] * a[0] + a[1] * a[1] + a[2] * a[2];
            fusion_real_t g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2];
            fusion_real_t m2 = has_mag ? m[0] * m[0] + m[1] * m[1] + m[2] * m[2] : FR(0.0);
            if (!isfinite(a2 + g2 + m2) && scan.bad_sample == n) scan.bad_sample = start + i;
            if (a2 > acc_limit2) {
                for (int k = 0; k < 3; k++) {
                    if (fr_fabs(a[k]) > scan.acc_max) scan.acc_max = fr_fabs(a[k]);
                }
            }
            if (g2 > gyr_limit2) {
                for (int k = 0; k < 3; k++) {
                    if (fr_fabs(g[k]) > scan.gyr_max) scan.gyr_max = fr_fabs(g[k]);
                }
            }
            if (lead_only) continue;
            acc_n2[start + i] = a2;
            gyr_n2[start + i] = g2;
            scan.acc_low += a2 < acc_low2;
            scan.acc_high += a2 > acc_high2;
            scan.gyr_fast += g2 > gyr_fast2;
            if (has_mag && !scan.mag_seen) scan.mag_seen = m[0] != FR(0.0) || m[1] != FR(0.0) || m[2] != FR(0.0);
        }
        if (KALMAN_WITH_VQF && block->filter == ORIENTATION_VQF) {
            run_vqf(block, count);
        } else {
            orientation_run(&block->orientation, st, count, (const fusion_real_t(*)[3])block->acc,
                            (const fusion_real_t(*)[3])block->gyr,
                            has_mag ? (const fusion_real_t(*)[3])block->mag : NULL, block->quat, block->innovation);
        }
        fusion_real_t rs = FR(0.0), rc = FR(0.0), ys = FR(0.0), yc = FR(0.0), i2 = FR(0.0);
        for (size_t i = 0; i < count; i++) {
            const fusion_real_t *q = block->quat[i];
            if (!isfinite(q[0] + q[1] + q[2] + q[3])) scan.diverged = true;
            if (lead_only) continue;
            euler_zyx_t e;
            quat_euler_zyx(q, has_mag, &e);
            roll[start + i] = e.roll * DEGREES;
            pitch[start + i] = e.pitch * DEGREES;
            rs += e.roll_sin;
            rc += e.roll_cos;
            if (has_mag) {
                yaw[start + i] = e.yaw * DEGREES;
                ys += e.yaw_sin;
                yc += e.yaw_cos;
            }
            i2 += block->innovation[i] * block->innovation[i];
        }
        roll_sin += rs;
        roll_cos += rc;
        yaw_sin += ys;
        yaw_cos += yc;
        innovation2 += i2;
    }
    code = orientation_checks(block, window, n, lead_only, &scan);
    if (code != FUSION_OK) return code;
    block->stream.started = true;
    if (lead_only) return FUSION_OK;
    size_t f = 0;
    circular_statistics(roll, n, roll_sin, roll_cos, features + f);
    f += 4;
    plain_statistics(pitch, n, features + f);
    f += 4;
    if (has_mag) {
        circular_statistics(yaw, n, yaw_sin, yaw_cos, features + f);
        f += 4;
    }
    if (block->filter == ORIENTATION_EKF || block->filter == ORIENTATION_MAHONY || block->filter == ORIENTATION_VQF) {
        for (int k = 0; k < 3; k++) features[f++] = (float)st->bias[k];
    }
    features[f] = (float)(fr_sqrt(innovation2 / (fusion_real_t)n) * DEGREES);
    return FUSION_OK;
}

/* --- kf ------------------------------------------------------------------------------------ */

/* The data-independent covariance sequence of one window. Q_i is the posterior before sample i
 * (Q_0 the window's start, Q_n its end): sample i's gain comes from Q_i, its smoother gain from
 * Q_{i+1}. In float32 the recursion settles, after tens to hundreds of samples, into a fixed point
 * or a short cycle (Q_i == Q_{i-p} to the bit, p <= KF_MAX_PERIOD); from there every gain repeats
 * with it, exactly, so the gains of one period are computed once. Before that, Q_i is kept in the
 * scratch and the gains are computed sample by sample. */
#define KF_MAX_PERIOD 4

typedef struct {
    cv_cov_t start, end;
    size_t cycle;                             /* first index of the cycle (n: none found) */
    size_t period;
    fusion_real_t k0[KF_MAX_PERIOD], k1[KF_MAX_PERIOD];  /* the gains along the cycle */
    fusion_real_t G[KF_MAX_PERIOD][4];
} kf_sequence_t;

static void kf_covariances(const kalman_t *block, const cv_cov_t *start, size_t n, bool smooth,
                           fusion_real_t *p00, fusion_real_t *p01, fusion_real_t *p11, kf_sequence_t *seq) {
    cv_cov_t Q = *start, ring[KF_MAX_PERIOD + 1];
    seq->start = *start;
    seq->cycle = n;
    seq->period = 1;
    size_t i = 0;
    for (; i < n; i++) {
        ring[i % (KF_MAX_PERIOD + 1)] = Q;
        p00[i] = Q.p00;
        p01[i] = Q.p01;
        p11[i] = Q.p11;
        fusion_real_t k0, k1;
        cv_covariance_step(&block->cv, &Q, &k0, &k1); /* Q is now Q_{i+1} */
        size_t found = 0;
        for (size_t period = 1; period <= KF_MAX_PERIOD && period <= i + 1 && !found; period++) {
            if (memcmp(&Q, &ring[(i + 1 - period) % (KF_MAX_PERIOD + 1)], sizeof Q) == 0) found = period;
        }
        if (found) {
            seq->cycle = i + 1 - found;
            seq->period = found;
            break;
        }
    }
    if (seq->cycle == n) {
        seq->end = Q;
        return;
    }
    for (size_t t = 0; t < seq->period; t++) {
        cv_cov_t member = ring[(seq->cycle + t) % (KF_MAX_PERIOD + 1)];
        cv_gain(&block->cv, &member, &seq->k0[t], &seq->k1[t]);
        if (smooth) cv_smoother_gain(&block->cv, &member, seq->G[t]);
    }
    seq->end = ring[(seq->cycle + (n - seq->cycle) % seq->period) % (KF_MAX_PERIOD + 1)];
}

static int kf_window(kalman_t *block, const fusion_window_t *window, size_t n, bool lead_only, float *features) {
    cv_state_t *xs = block->stream.u.kf.x;
    cv_cov_t *Ps = block->stream.u.kf.P;
    int code;
    if (!block->stream.started) {
        code = read_samples(block, window, 0, 1);
        if (code != FUSION_OK) return code;
        for (size_t a = 0; a < block->mapped; a++) {
            cv_start(&block->cv, (fusion_real_t)block->raw[block->mapped_column[a]], &xs[a], &Ps[a]);
        }
    }
    fusion_real_t *value = block->scratch, *rate = block->scratch + N_MAX;
    fusion_real_t *p00 = block->scratch + 2 * N_MAX, *p01 = block->scratch + 3 * N_MAX, *p11 = block->scratch + 4 * N_MAX;
    bool keep = !lead_only;
    bool smooth = keep && block->rts;
    kf_sequence_t seq;
    bool have_sequence = false;
    for (size_t a = 0; a < block->mapped; a++) {
        /* Axes starting from the same covariance (all of them, in practice) share one sequence. */
        if (!have_sequence || memcmp(&Ps[a], &seq.start, sizeof seq.start) != 0) {
            kf_covariances(block, &Ps[a], n, smooth, p00, p01, p11, &seq);
            have_sequence = true;
        }
        cv_state_t x = xs[a];
        size_t column = (size_t)block->mapped_column[a];
        fusion_real_t innovation2 = FR(0.0);
        size_t phase = 0;
        for (size_t start = 0; start < n; start += block->chunk_samples) {
            size_t count = chunk_at(block, start, n);
            code = read_samples(block, window, start, count);
            if (code != FUSION_OK) return code;
            const float *z = block->raw + column;
            fusion_real_t part = FR(0.0);
            for (size_t i = 0; i < count; i++, z += block->input_axes) {
                size_t k = start + i;
                fusion_real_t k0, k1;
                if (k < seq.cycle) {
                    cv_cov_t Q = {p00[k], p01[k], p11[k]};
                    cv_gain(&block->cv, &Q, &k0, &k1);
                } else {
                    k0 = seq.k0[phase];
                    k1 = seq.k1[phase];
                    if (++phase == seq.period) phase = 0;
                }
                fusion_real_t error = cv_state_step(&block->cv, &x, (fusion_real_t)*z, k0, k1);
                part += error * error;
                if (keep) {
                    value[k] = x.value;
                    rate[k] = x.rate;
                }
            }
            innovation2 += part;
        }
        xs[a] = x;
        Ps[a] = seq.end;
        if (!keep) continue;
        if (smooth && n > 1) {
            /* Sample k's smoother gain comes from Q_{k+1}, k = n-2 down to 0. */
            phase = n - 1 >= seq.cycle ? (n - 1 - seq.cycle) % seq.period : 0;
            cv_state_t s = {value[n - 1], rate[n - 1]};
            for (size_t k = n - 1; k-- > 0;) {
                fusion_real_t G[4];
                const fusion_real_t *gain = G;
                if (k + 1 < seq.cycle) {
                    cv_cov_t Q = {p00[k + 1], p01[k + 1], p11[k + 1]};
                    cv_smoother_gain(&block->cv, &Q, G);
                } else {
                    gain = seq.G[phase];
                    phase = phase == 0 ? seq.period - 1 : phase - 1;
                }
                cv_state_t filtered = {value[k], rate[k]};
                cv_smooth_step(&block->cv, gain, &filtered, &s);
                value[k] = s.value;
                rate[k] = s.rate;
            }
        }
        float *out = features + 6 * a;
        plain_statistics(value, n, out);
        fusion_real_t rate_mean = sum_of(rate, n) / (fusion_real_t)n;
        out[4] = (float)std_around(rate, n, rate_mean);
        out[5] = (float)fr_sqrt(innovation2 / (fusion_real_t)n);
    }
    for (size_t a = 0; a < block->mapped; a++) {
        if (!(finite(xs[a].value) && finite(xs[a].rate) && finite(Ps[a].p00) && finite(Ps[a].p01) &&
              finite(Ps[a].p11))) {
            return state_error(block);
        }
    }
    block->stream.started = true;
    return FUSION_OK;
}

/* --- weighted ------------------------------------------------------------------------------ */

static void mapped_values(const kalman_t *block, const float *row, fusion_real_t *out) {
    for (size_t a = 0; a < block->mapped; a++) out[a] = (fusion_real_t)row[block->mapped_column[a]];
}

static int weighted_window(kalman_t *block, const fusion_window_t *window, size_t n, bool lead_only,
                           float *features) {
    size_t k = block->mapped;
    const fusion_real_t *variances = block->variances;
    int code;
    if (!block->given_variances) {
        weighted_estimate_t *e = &block->stream.u.weighted;
        size_t count = e->started ? n : n - 1;
        if (count == 0 && !e->started) {
            return fail(block, FUSION_ERR_INPUT,
                        "Weighted fusion estimates the noise from sample-to-sample differences: send at least "
                        "2 samples, or give the variances.");
        }
        fusion_real_t first[KALMAN_DECLARED_AXES], last[KALMAN_DECLARED_AXES], z[KALMAN_DECLARED_AXES];
        code = read_samples(block, window, n - 1, 1);
        if (code != FUSION_OK) return code;
        mapped_values(block, block->raw, last);
        if (e->started) {
            memcpy(first, e->last, sizeof(fusion_real_t) * k);
        } else {
            code = read_samples(block, window, 0, 1);
            if (code != FUSION_OK) return code;
            mapped_values(block, block->raw, first);
        }
        weighted_differences_t d;
        weighted_differences_begin(&d, k, first, last, count);
        size_t begin = e->started ? 0 : 1;
        for (size_t start = begin; start < n; start += block->chunk_samples) {
            size_t chunk = chunk_at(block, start, n);
            code = read_samples(block, window, start, chunk);
            if (code != FUSION_OK) return code;
            for (size_t i = 0; i < chunk; i++) {
                mapped_values(block, block->raw + i * block->input_axes, z);
                weighted_differences_add(&d, z);
            }
        }
        weighted_estimate_update(e, &d, k, last, block->memory_samples);
        if (!(all_finite(e->variance, k) && all_finite(e->last, k) && finite(e->support))) {
            return state_error(block);
        }
        variances = e->variance;
    }
    block->stream.started = true;
    if (lead_only) return FUSION_OK;
    fusion_real_t weights[KALMAN_DECLARED_AXES], fused_variance, z[KALMAN_DECLARED_AXES];
    weighted_weights(variances, k, weights, &fused_variance);
    fusion_real_t *fused = block->scratch;
    for (size_t start = 0; start < n; start += block->chunk_samples) {
        size_t chunk = chunk_at(block, start, n);
        code = read_samples(block, window, start, chunk);
        if (code != FUSION_OK) return code;
        for (size_t i = 0; i < chunk; i++) {
            mapped_values(block, block->raw + i * block->input_axes, z);
            fusion_real_t v = FR(0.0);
            for (size_t a = 0; a < k; a++) v += weights[a] * z[a];
            fused[start + i] = v;
        }
    }
    plain_statistics(fused, n, features);
    features[4] = (float)fused_variance;
    for (size_t a = 0; a < k; a++) {
        features[5 + a] = (float)weights[a];
        features[5 + k + a] = (float)variances[a];
    }
    return FUSION_OK;
}

/* --- process ------------------------------------------------------------------------------- */

static int process_window(kalman_t *block, const fusion_window_t *window, size_t n, bool lead_only,
                          float *features) {
    if (block->kind == KIND_ORIENTATION) return orientation_window(block, window, n, lead_only, features);
    int code = check_finite(block, window, n);
    if (code != FUSION_OK) return code;
    if (block->kind == KIND_KF) return kf_window(block, window, n, lead_only, features);
    return weighted_window(block, window, n, lead_only, features);
}

int kalman_process(kalman_t *block, const fusion_window_t *window, float *features, size_t capacity) {
    if (block == NULL) return FUSION_ERR_PARAMETER;
    block->message[0] = '\0';
    if (!block->ready) return fail(block, FUSION_ERR_PARAMETER, "kalman_init failed or was not called.");
    if (window == NULL || window->read == NULL) return fail(block, FUSION_ERR_READ, "No window reader given.");
    if (window->input_axes != block->input_axes) {
        message_t m = message_start(block);
        put_text(&m, "The window has ");
        put_size(&m, window->input_axes);
        put_text(&m, " values per sample, but the block was initialised for ");
        put_size(&m, block->input_axes);
        put_char(&m, '.');
        return FUSION_ERR_AXES;
    }
    if (window->samples == 0) {
        return fail(block, FUSION_ERR_INPUT, "The window must hold at least one sample of every mapped axis.");
    }
    if (window->samples > KALMAN_MAX_WINDOW_SAMPLES) {
        message_t m = message_start(block);
        put_text(&m, "The window has ");
        put_size(&m, window->samples);
        put_text(&m, " samples; this build takes at most KALMAN_MAX_WINDOW_SAMPLES = ");
        put_size(&m, KALMAN_MAX_WINDOW_SAMPLES);
        put_char(&m, '.');
        return FUSION_ERR_CAPACITY;
    }
    if (features == NULL || capacity < block->feature_count) {
        return fail(block, FUSION_ERR_CAPACITY, "The feature buffer is below kalman_feature_count().");
    }
    block->saved = block->stream;
    int code = process_window(block, window, window->samples, false, features);
    if (code != FUSION_OK) {
        block->stream = block->saved;
        return code;
    }
    if (block->increase > 0 && block->increase < window->samples) {
        /* Overlapping windows: hand on the state after the first `increase` samples, computed from
         * the state before this window, as the server's continuing_overlapping_windows does. */
        block->stream = block->saved;
        code = process_window(block, window, block->increase, true, NULL);
        if (code != FUSION_OK) {
            block->stream = block->saved;
            char cause[FUSION_MESSAGE_CAPACITY];
            memcpy(cause, block->message, sizeof cause);
            message_t m = message_start(block);
            put_text(&m, "State after the first ");
            put_size(&m, block->increase);
            put_text(&m, " samples (window-increase-ms): ");
            put_text(&m, cause);
            return code;
        }
    }
    return FUSION_OK;
}
