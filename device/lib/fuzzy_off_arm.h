/* Fuzzy off-arm detector (`fuzzy-off-arm`) on the device: the same features as the server's
 * block (dsp/fusion/off_arm.py, dsp/fusion/fuzzy_logic.py), window by window, with the stream's
 * state (composite motion level, pending synthetic no-motion events, running-average tails)
 * carried from one window to the next inside the instance.
 *
 * Use:
 *     static fuzzy_off_arm_t block;                    // one instance per stream
 *     fuzzy_off_arm_init(&block, &params, 50.0f, columns, 3);   // validates and precomputes
 *     fuzzy_off_arm_process(&block, &window, features, FUZZY_OFF_ARM_MAX_FEATURES);  // per window
 *     fuzzy_off_arm_reset(&block);                     // a new stream, same settings
 *
 * Features, in the server's order: the mean membership of each input set (light LOW, MID, HIGH;
 * motion LOW, MODERATE, HIGH; hr NOT_LOCKED, LOCKED), the mean firing strength of each rule,
 * off_arm_mean, off_arm_last, off_arm_fraction (share of samples above 0.5).
 *
 * Numbers: float32 (fusion_real_t; float64 with -DFUSION_REAL_DOUBLE). Exceptions, where float32
 * would change a discrete decision the server takes in float64: the events-mode motion level and
 * its memberships, and the synthetic-event timing, are computed in double, but only when an event
 * changes them (a few per second), never per sample; init computes the sampled output sets in
 * double. Mamdani defuzzification is in closed form over the linear pieces of the output sets on
 * the sampled universe, so its cost does not grow with `universe-points` (any value the server
 * accepts, 11 to 10001) and the sampled sets are never stored.
 *
 * Measured on a Cortex-M4F (arm-none-eabi-gcc 12.2 -Os, QEMU mps2-an386):
 * - flash: 29 KB with the custom rule parser, 23 KB with -DFUZZY_RULES_JSON=0 (of which ~4 KB
 *   libgcc's soft double, ~3 KB message texts);
 * - RAM: the instance is 5936 bytes at the defaults: 1848 for settings, fuzzy system and state,
 *   plus 2 x (FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES - 1) x 4 for the running-average tails;
 * - stack: process() at most 2.1 KB (its chunk buffers and per-feature sums), init() less;
 * - time per sample with every input changing every sample (the worst case): centroid ~1700
 *   instructions, bisector ~2600, mom ~1400, sugeno ~1150; on a wristband-like stream (light
 *   steady for seconds, heart-rate lock in runs, events at ~2 Hz) 700 to 1250, because degrees,
 *   rules and inference are recomputed only when their inputs change.
 * No heap, no globals, no recursion.
 */
#ifndef FUZZY_OFF_ARM_H
#define FUZZY_OFF_ARM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusion_window.h"
#include "fuzzy_rules.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One entry per parameters.json parameter, in file order, with the C type Edge Impulse Studio
 * generates (select and string -> const char *, float -> float, int -> int, boolean -> bool).
 * Field name = param with '-' -> '_'. */
#define FUZZY_OFF_ARM_PARAMETERS(X)         \
    X(const char *, motion_input)           \
    X(float, motion_event_rate)             \
    X(float, motion_rise_time)              \
    X(float, motion_fall_time)              \
    X(float, motion_average_time)           \
    X(float, gravity)                       \
    X(float, motion_full_scale)             \
    X(float, hr_average_time)               \
    X(const char *, light_low)              \
    X(const char *, light_mid)              \
    X(const char *, light_high)             \
    X(const char *, motion_low)             \
    X(const char *, motion_moderate)        \
    X(const char *, motion_high)            \
    X(const char *, hr_not_locked)          \
    X(const char *, hr_locked)              \
    X(const char *, on_arm)                 \
    X(const char *, probably_off)           \
    X(const char *, certainly_off)          \
    X(const char *, rule_base)              \
    X(const char *, custom_rules)           \
    X(const char *, inference)              \
    X(float, no_rule_output)                \
    X(int, universe_points)                 \
    X(float, window_increase_ms)

typedef struct {
#define FUZZY_OFF_ARM_FIELD(type, name) type name;
    FUZZY_OFF_ARM_PARAMETERS(FUZZY_OFF_ARM_FIELD)
#undef FUZZY_OFF_ARM_FIELD
} fuzzy_off_arm_params_t;

/* The block's axes, in info.axes order: light, motion, hr_locked (all required). */
#define FUZZY_OFF_ARM_DECLARED_AXES 3

/* Longest running average (hr-average-time, and motion-average-time in quantity and magnitude
 * modes) in samples, round(T x fs): 512 is 10 s at 51.2 Hz. Each average keeps its last
 * (length - 1) samples, so the instance holds 2 x (this - 1) fusion_real_t. Longer averages are
 * refused at init with FUSION_ERR_CAPACITY (the server allows 200000). */
#ifndef FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES
#define FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES 512
#endif

/* Values process() reads per call of the window reader (a stack buffer of this many floats; a
 * window with more input axes is read one value at a time), and samples it handles per chunk
 * (five stack buffers of this many values). */
#ifndef FUZZY_OFF_ARM_READ_VALUES
#define FUZZY_OFF_ARM_READ_VALUES 48
#endif
#ifndef FUZZY_OFF_ARM_CHUNK_SAMPLES
#define FUZZY_OFF_ARM_CHUNK_SAMPLES 16
#endif

/* Custom rule bases: at most FUZZY_RULES_MAX_RULES rules (16), FUZZY_RULES_MAX_NODES AND / OR /
 * NOT nodes (32), FUZZY_RULES_MAX_OPERANDS operands (64), nested FUZZY_RULES_MAX_DEPTH deep
 * (16), all in fuzzy_rules.h; beyond them init returns FUSION_ERR_CAPACITY. FUZZY_RULES_JSON=0
 * leaves the parser out (custom rule bases then give FUSION_ERR_UNSUPPORTED). */

/* Input sets (membership features), output sets. */
#define FUZZY_OFF_ARM_INPUT_SETS 8
#define FUZZY_OFF_ARM_OUTPUT_SETS 3

/* Most features a configuration can have: 8 memberships, one per rule, 3 outputs. */
#define FUZZY_OFF_ARM_MAX_FEATURES (FUZZY_OFF_ARM_INPUT_SETS + FUZZY_RULES_MAX_RULES + 3)

#if FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES < 2
#error "FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES must be at least 2"
#endif

/* A membership function: breakpoints x (2 for shoulders; 4 for middle sets, a triangle repeating
 * its peak), shape (which fixes the degrees 1/0, 0/1 or 0/1/1/0), and 1 / width of each segment. */
typedef struct {
    fusion_real_t x[4];
    fusion_real_t inverse_width[3];
    uint8_t shape;
} fuzzy_off_arm_set_t;

/* A linear piece of an output set sampled on the universe: from index `start` to the next
 * piece's start, degree value + slope * (index - start). */
typedef struct {
    int32_t start;
    fusion_real_t value;
    fusion_real_t slope;
} fuzzy_off_arm_piece_t;

/* A nonzero linear piece of a fixed function of the universe index: indices first .. last,
 * value + slope * (index - first). */
typedef struct {
    int16_t first, last;
    fusion_real_t value;
    fusion_real_t slope;
} fuzzy_off_arm_span_t;

/* Pieces of the 7 functions the centroid's inclusion-exclusion needs (each output set, each
 * pair's and the three's pointwise minimum), at most 3 + 3 + 3 + 3 x 10 + 15 (the most a
 * minimum of two or three shoulders and trapezoids can have). */
#define FUZZY_OFF_ARM_SPANS 56

/* What changes from sample to sample, carried between windows. */
typedef struct {
    double motion_level;                /* events mode, 0..1 */
    int64_t no_motion_age;              /* samples since the last real no-motion event */
    int64_t next_synthetic;             /* age at which the next synthetic no-motion event falls */
    bool pending;                       /* synthetic no-motion events are being generated */
    fusion_real_t motion_degree[3];     /* events mode: memberships of the motion level */
    fusion_real_t hr_sum, hr_error;     /* sum of the heart-rate tail, compensated (sum + error) */
    fusion_real_t motion_sum, motion_error;
    uint32_t hr_count, motion_count;    /* samples in each tail */
} fuzzy_off_arm_stream_t;

typedef struct {
    /* Settings. */
    bool ready;
    uint8_t motion_input;               /* events, quantity, magnitude */
    uint8_t inference;                  /* centroid, bisector, mom, sugeno */
    size_t input_axes;
    size_t column[FUZZY_OFF_ARM_DECLARED_AXES];
    size_t increase;                    /* window increase in samples; 0: windows follow each other */
    uint32_t hr_capacity;               /* tail lengths: running-average length - 1 */
    uint32_t motion_capacity;
    double step_up, step_down;          /* events mode: level change per any-motion / no-motion event */
    double events_per_sample;           /* event rate / sampling frequency */
    fusion_real_t gravity, full_scale;  /* magnitude mode */
    fusion_real_t no_rule_output;
    /* The fuzzy system. */
    fuzzy_off_arm_set_t input_set[FUZZY_OFF_ARM_INPUT_SETS];
    double motion_x[3][4];              /* events mode: motion breakpoints, as the server's float64 */
    uint8_t rule_set;                   /* article, reduced, custom */
    fuzzy_off_arm_piece_t piece[FUZZY_OFF_ARM_OUTPUT_SETS][5];
    uint8_t piece_count[FUZZY_OFF_ARM_OUTPUT_SETS];
    fuzzy_off_arm_span_t span[FUZZY_OFF_ARM_SPANS];
    uint8_t term_first[7], term_count[7];  /* term m: the minimum of the sets of bit mask m + 1 */
    fusion_real_t edge[FUZZY_OFF_ARM_OUTPUT_SETS][2];  /* degree at the universe's first and last point */
    fusion_real_t output_peak[FUZZY_OFF_ARM_OUTPUT_SETS];      /* highest sampled degree */
    fusion_real_t output_constant[FUZZY_OFF_ARM_OUTPUT_SETS];  /* Sugeno constant: middle of the core */
    int32_t last_index;                 /* universe-points - 1 */
    fusion_real_t step;                 /* 1 / (universe-points - 1) */
    fuzzy_rule_base_t rules;
    /* State. */
    fuzzy_off_arm_stream_t stream;
    uint32_t hr_head, motion_head;      /* oldest sample of each ring */
    fusion_real_t hr_tail[FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES - 1];
    fusion_real_t motion_tail[FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES - 1];
    char message[FUSION_MESSAGE_CAPACITY];
} fuzzy_off_arm_t;

/* sizeof(fuzzy_off_arm_t), for hosts (ctypes) that allocate the instance. */
size_t fuzzy_off_arm_instance_size(void);

/* Validates the parameters as the server does (everything that does not depend on the data),
 * precomputes the fuzzy system and starts a fresh stream (the server's state ""). columns[i] is
 * the input column (0-based, < input_axes) of declared axis i, or -1 if unmapped.
 * Returns FUSION_OK, or FUSION_ERR_PARAMETER / _AXES / _CAPACITY with fuzzy_off_arm_message(). */
int fuzzy_off_arm_init(fuzzy_off_arm_t *block, const fuzzy_off_arm_params_t *params, float sampling_freq,
                       const int columns[FUZZY_OFF_ARM_DECLARED_AXES], size_t input_axes);

/* Starts a new stream with the same settings. */
void fuzzy_off_arm_reset(fuzzy_off_arm_t *block);

/* Features per window: 8 + rules + 3 (0 before a successful init). */
size_t fuzzy_off_arm_feature_count(const fuzzy_off_arm_t *block);

/* Computes one window's features into features[0 .. feature_count) and carries the state on
 * (with a window increase shorter than the window, the state where the next window starts).
 * Errors: FUSION_ERR_INPUT (a value the server refuses), FUSION_ERR_AXES (the window's axes
 * differ from init's), FUSION_ERR_CAPACITY (capacity < feature count), FUSION_ERR_READ; the
 * stream's state is then unchanged, except when the reader fails on a window it read
 * successfully moments before (the stream is then reset, and the message says so). */
int fuzzy_off_arm_process(fuzzy_off_arm_t *block, const fusion_window_t *window, float *features,
                          size_t capacity);

/* The message of the last error, "" if none. */
const char *fuzzy_off_arm_message(const fuzzy_off_arm_t *block);

#ifdef __cplusplus
}
#endif

#endif
