/* Fuzzy off-arm detector on the device; see fuzzy_off_arm.h. The server's code it follows is
 * named in each section (dsp/fusion/off_arm.py, dsp/fusion/fuzzy_logic.py, dsp/core/state.py). */
#include "fuzzy_off_arm.h"

#include <math.h>
#include <string.h>

#include "fusion_text.h"

enum { MOTION_EVENTS, MOTION_QUANTITY, MOTION_MAGNITUDE };
enum { INFER_CENTROID, INFER_BISECTOR, INFER_MOM, INFER_SUGENO };
enum { SHAPE_LOW, SHAPE_HIGH, SHAPE_MIDDLE };
enum { AXIS_LIGHT, AXIS_MOTION, AXIS_HR };

/* The server's constants (off_arm.py). */
#define LEVEL_SNAP 1e-9
#define TIME_SLACK 1e-9
#define SERVER_MAX_AVERAGE_SAMPLES 200000.0
#define OFF_ARM_THRESHOLD FR(0.5)

/* fuzzy_logic.py takes a degree within 1e-9 of the peak as the peak (so plateaus clipped at
 * the same strength tie however each set's samples rounded) and a cumulative area within 1e-12
 * of half the total as reaching it (so a half-way point in a gap gives the gap's left edge). In
 * float32 such exact ties come out up to ~1e-7 apart (measured: a tolerance of 1e-7 still finds
 * every one on a grid of breakpoint-aligned inputs, 3e-8 misses some), so the peak tolerance is
 * 4e-7: enough margin, and as small as possible, because a degree that is genuinely within it
 * of the peak but not within 1e-9 (a near-tie, rare on real inputs) counts here and not there.
 * The bisector's sums are relative and accurate to ~1e-6 at 10001 points, hence 1e-5. */
#ifdef FUSION_REAL_DOUBLE
#define PEAK_TOLERANCE 1e-9
#define BISECTOR_SLACK 1e-12
#else
#ifndef FUZZY_OFF_ARM_PEAK_TOLERANCE
#define FUZZY_OFF_ARM_PEAK_TOLERANCE 4e-7f
#endif
#define PEAK_TOLERANCE FUZZY_OFF_ARM_PEAK_TOLERANCE
#define BISECTOR_SLACK 1e-5f
#endif

/* Pieces of one output set once clipped (5 pieces, two of them split by the clip). */
#define CLIPPED_PIECES 8

static const uint8_t SHAPE_POINTS[3] = {2, 2, 4};
static const uint8_t SHAPE_DEGREE[3][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 1, 1, 0}};

/* The parameters holding the 11 sets, in feature order (8 inputs, then the 3 output sets). */
static const char *const SET_PARAM[11] = {
    "light-low", "light-mid", "light-high", "motion-low", "motion-moderate", "motion-high",
    "hr-not-locked", "hr-locked", "on-arm", "probably-off", "certainly-off"};
static const uint8_t SET_SHAPE[11] = {
    SHAPE_LOW, SHAPE_MIDDLE, SHAPE_HIGH, SHAPE_LOW, SHAPE_MIDDLE, SHAPE_HIGH,
    SHAPE_LOW, SHAPE_HIGH, SHAPE_LOW, SHAPE_MIDDLE, SHAPE_HIGH};
static const char *const SHAPE_EXPECTED[3] = {
    "2 numbers: 1 up to the first, 0 from the second",
    "2 numbers: 0 up to the first, 1 from the second",
    "3 or 4 numbers: 0 below the first, 1 from the second to the third (or at the second, for 3), "
    "0 above the last"};

/* The variables as the rule parser sees them; registers are the membership features' order. */
static const char *const OUTPUT_SETS[] = {"ON_ARM", "PROBABLY_OFF", "CERTAINLY_OFF"};
#if FUZZY_RULES_JSON
static const char *const LIGHT_SETS[] = {"LOW", "MID", "HIGH"};
static const char *const MOTION_SETS[] = {"LOW", "MODERATE", "HIGH"};
static const char *const HR_SETS[] = {"NOT_LOCKED", "LOCKED"};
static const fuzzy_variable_t INPUT_VARIABLES[3] = {
    {"light", LIGHT_SETS, 3, 0}, {"motion", MOTION_SETS, 3, 3}, {"hr", HR_SETS, 2, 6}};
static const fuzzy_variable_t OUTPUT_VARIABLE = {"off_arm", OUTPUT_SETS, 3, 0};
#endif

/* off_arm.py's ARTICLE_RULES and REDUCED_RULES in fuzzy_rules_load's postfix form, rule by rule
 * in the article's words. */
enum { L_LOW, L_MID, L_HIGH, M_LOW, M_MODERATE, M_HIGH, HR_NOT_LOCKED, HR_LOCKED };
#define AND3 FUZZY_RULES_AND(3)
#define OR2 FUZZY_RULES_OR(2)
#define ON_ARM FUZZY_RULES_THEN(0)
#define PROBABLY_OFF FUZZY_RULES_THEN(1)
#define CERTAINLY_OFF FUZZY_RULES_THEN(2)
static const uint8_t ARTICLE_RULES[] = {
    M_LOW, HR_NOT_LOCKED, L_HIGH, AND3, CERTAINLY_OFF,
    M_HIGH, HR_NOT_LOCKED, L_HIGH, AND3, CERTAINLY_OFF,
    M_LOW, HR_NOT_LOCKED, L_LOW, L_MID, OR2, AND3, CERTAINLY_OFF,
    L_HIGH, CERTAINLY_OFF,
    M_HIGH, HR_NOT_LOCKED, L_MID, AND3, PROBABLY_OFF,
    M_HIGH, HR_NOT_LOCKED, L_LOW, AND3, PROBABLY_OFF,
    M_LOW, HR_LOCKED, L_LOW, AND3, PROBABLY_OFF,
    M_HIGH, HR_LOCKED, L_LOW, AND3, ON_ARM,
    M_MODERATE, HR_LOCKED, L_LOW, AND3, ON_ARM,
    FUZZY_RULES_END};
static const uint8_t REDUCED_RULES[] = {
    L_HIGH, CERTAINLY_OFF,
    M_LOW, HR_NOT_LOCKED, L_LOW, L_MID, OR2, AND3, CERTAINLY_OFF,
    M_HIGH, HR_NOT_LOCKED, L_LOW, L_MID, OR2, AND3, PROBABLY_OFF,
    M_LOW, HR_LOCKED, L_LOW, AND3, PROBABLY_OFF,
    M_HIGH, M_MODERATE, OR2, HR_LOCKED, L_LOW, AND3, ON_ARM,
    FUZZY_RULES_END};

/* The two built-in rule bases written out (the same strengths as fuzzy_rules_evaluate on the
 * programs above, a quarter of the instructions). Degrees in feature order: */
enum { D_L_LOW, D_L_MID, D_L_HIGH, D_M_LOW, D_M_MODERATE, D_M_HIGH, D_NOT_LOCKED, D_LOCKED };
static void article_rules(const fusion_real_t *d, fusion_real_t *f);
static void reduced_rules(const fusion_real_t *d, fusion_real_t *f);

#define MIN_R(a, b) ((a) < (b) ? (a) : (b))
#define MAX_R(a, b) ((a) > (b) ? (a) : (b))

/* floor and ceil of an index offset (callers keep |x| < 2^30), without a libm call: the
 * Cortex-M4's FPU has no rounding instruction, and floorf costs ~30 instructions. */
static int32_t floor_int(fusion_real_t x) {
    int32_t i = (int32_t)x;
    return (fusion_real_t)i > x ? i - 1 : i;
}

static int32_t ceil_int(fusion_real_t x) {
    int32_t i = (int32_t)x;
    return (fusion_real_t)i < x ? i + 1 : i;
}

/* floor, ceil and round-half-even (Python's round) in double, for init and event timing:
 * through int64, smaller than libm's (whose three functions take 800 bytes). */
static double floor_d(double x) {
    if (!(x > -4503599627370496.0 && x < 4503599627370496.0)) return x;  /* 2^52: already whole */
    double t = (double)(int64_t)x;
    return t > x ? t - 1.0 : t;
}

static double ceil_d(double x) { return -floor_d(-x); }

static double round_half_even(double x) {
    double f = floor_d(x), d = x - f;
    if (d != 0.5) return d > 0.5 ? f + 1.0 : f;
    return ((int64_t)f & 1) ? f + 1.0 : f;
}

static double min_d(double a, double b) { return b < a ? b : a; }
static double max_d(double a, double b) { return b > a ? b : a; }

static fusion_real_t min2(fusion_real_t a, fusion_real_t b) { return b < a ? b : a; }
static fusion_real_t max2(fusion_real_t a, fusion_real_t b) { return b > a ? b : a; }
static fusion_real_t min3(fusion_real_t a, fusion_real_t b, fusion_real_t c) { return min2(min2(a, b), c); }

static void article_rules(const fusion_real_t *d, fusion_real_t *f) {
    fusion_real_t low_or_mid = max2(d[D_L_LOW], d[D_L_MID]);
    f[0] = min3(d[D_M_LOW], d[D_NOT_LOCKED], d[D_L_HIGH]);
    f[1] = min3(d[D_M_HIGH], d[D_NOT_LOCKED], d[D_L_HIGH]);
    f[2] = min3(d[D_M_LOW], d[D_NOT_LOCKED], low_or_mid);
    f[3] = d[D_L_HIGH];
    f[4] = min3(d[D_M_HIGH], d[D_NOT_LOCKED], d[D_L_MID]);
    f[5] = min3(d[D_M_HIGH], d[D_NOT_LOCKED], d[D_L_LOW]);
    f[6] = min3(d[D_M_LOW], d[D_LOCKED], d[D_L_LOW]);
    f[7] = min3(d[D_M_HIGH], d[D_LOCKED], d[D_L_LOW]);
    f[8] = min3(d[D_M_MODERATE], d[D_LOCKED], d[D_L_LOW]);
}

static void reduced_rules(const fusion_real_t *d, fusion_real_t *f) {
    fusion_real_t low_or_mid = max2(d[D_L_LOW], d[D_L_MID]);
    f[0] = d[D_L_HIGH];
    f[1] = min3(d[D_M_LOW], d[D_NOT_LOCKED], low_or_mid);
    f[2] = min3(d[D_M_HIGH], d[D_NOT_LOCKED], low_or_mid);
    f[3] = min3(d[D_M_LOW], d[D_LOCKED], d[D_L_LOW]);
    f[4] = min3(max2(d[D_M_HIGH], d[D_M_MODERATE]), d[D_LOCKED], d[D_L_LOW]);
}

/* ------------------------------------------------------------------------------------------ */
/* Messages                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static fuzzy_message_t start_message(fuzzy_off_arm_t *block) {
    fuzzy_message_t message;
    fuzzy_message_start(&message, block->message, sizeof block->message);
    return message;
}

static int fail(fuzzy_off_arm_t *block, int code, const char *a, const char *b, const char *c) {
    fuzzy_message_t message = start_message(block);
    fuzzy_message_text(&message, a);
    if (b != NULL) fuzzy_message_text(&message, b);
    if (c != NULL) fuzzy_message_text(&message, c);
    return code;
}

/* "Parameter 'name' <what> <unit>; got <value>" */
static int fail_value(fuzzy_off_arm_t *block, const char *name, const char *what, double value) {
    fuzzy_message_t message = start_message(block);
    fuzzy_message_text(&message, "Parameter '");
    fuzzy_message_text(&message, name);
    fuzzy_message_text(&message, "' ");
    fuzzy_message_text(&message, what);
    fuzzy_message_text(&message, "; got ");
    fuzzy_message_number(&message, value);
    return FUSION_ERR_PARAMETER;
}

static int fail_text(fuzzy_off_arm_t *block, const char *name, const char *what, const char *text) {
    fuzzy_message_t message = start_message(block);
    fuzzy_message_text(&message, "Parameter '");
    fuzzy_message_text(&message, name);
    fuzzy_message_text(&message, "' ");
    fuzzy_message_text(&message, what);
    fuzzy_message_text(&message, "; got '");
    fuzzy_message_text(&message, text != NULL ? text : "(null)");
    fuzzy_message_text(&message, "'");
    return FUSION_ERR_PARAMETER;
}

/* ------------------------------------------------------------------------------------------ */
/* Membership functions (off_arm.py _membership, fuzzy_logic.py MembershipFunction)            */
/* ------------------------------------------------------------------------------------------ */

static int parse_set(fuzzy_off_arm_t *block, int index, const char *text, double x[4]) {
    const char *name = SET_PARAM[index];
    uint8_t shape = SET_SHAPE[index];
    double v[5];
    /* The server splits at commas only: a semicolon is not a separator there. */
    int count = text != NULL && strchr(text, ';') == NULL ? fusion_parse_numbers(text, v, 5) : -1;
    fuzzy_message_t message = start_message(block);
    if (count < 0 || (shape == SHAPE_MIDDLE ? count != 3 && count != 4 : count != 2)) {
        fuzzy_message_text(&message, "Parameter '");
        fuzzy_message_text(&message, name);
        fuzzy_message_text(&message, "' must be ");
        fuzzy_message_text(&message, SHAPE_EXPECTED[shape]);
        fuzzy_message_text(&message, count < 0 ? ", comma-separated; got '" : "; got '");
        fuzzy_message_text(&message, text != NULL ? text : "(null)");
        fuzzy_message_text(&message, "'");
        return FUSION_ERR_PARAMETER;
    }
    for (int i = 1; i < count; i++) {
        if (v[i] < v[i - 1]) {
            return fail_text(block, name, "must list its breakpoints in increasing order", text);
        }
    }
    if (count == 3) {  /* a triangle: a trapezoid whose top is one point */
        v[3] = v[2];
        v[2] = v[1];
    }
    memcpy(x, v, sizeof(double) * SHAPE_POINTS[shape]);
    return FUSION_OK;
}

/* The degree at v, as the server computes it in float64 (the first degree plus clipped ramps
 * (v - x0) / (x1 - x0) x rise, plus a step at each vertical edge, which are continuous from the
 * right): used for the events-mode motion level, whose float64 value sits on breakpoints. */
static double degree_double(const double *x, uint8_t shape, double v) {
    const uint8_t *y = SHAPE_DEGREE[shape];
    int n = SHAPE_POINTS[shape];
    if (v < x[0]) return y[0];
    if (v >= x[n - 1]) return y[n - 1];
    int j = n - 2;
    while (x[j] > v) j--;
    if (y[j] == y[j + 1]) return y[j];
    double ramp = (v - x[j]) / (x[j + 1] - x[j]);
    return y[j + 1] > y[j] ? ramp : 1.0 - ramp;
}

/* The same in fusion_real_t, per sample, one case per shape (the same values as the general
 * rule above, continuous from the right at vertical edges). */
static fusion_real_t ramp(const fuzzy_off_arm_set_t *set, int k, fusion_real_t v) {
    fusion_real_t r = (v - set->x[k]) * set->inverse_width[k];
    return r > FR(1.0) ? FR(1.0) : r;  /* the reciprocal can round the last step past 1 */
}

static fusion_real_t degree(const fuzzy_off_arm_set_t *set, fusion_real_t v) {
    const fusion_real_t *x = set->x;
    switch (set->shape) {
        case SHAPE_LOW:
            return v < x[0] ? FR(1.0) : v >= x[1] ? FR(0.0) : FR(1.0) - ramp(set, 0, v);
        case SHAPE_HIGH:
            return v < x[0] ? FR(0.0) : v >= x[1] ? FR(1.0) : ramp(set, 0, v);
        default:
            if (v < x[0] || v >= x[3]) return FR(0.0);
            if (v < x[1]) return ramp(set, 0, v);
            return v < x[2] ? FR(1.0) : FR(1.0) - ramp(set, 2, v);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Output sets on the sampled universe (fuzzy_logic.py OutputVariable, np.interp, linspace)     */
/* ------------------------------------------------------------------------------------------ */

/* Init only, in double: the universe point as np.linspace(0, 1, points) gives it. */
static double universe_at(int32_t j, int32_t last) {
    return j >= last ? 1.0 : (double)j * (1.0 / (double)last);
}

/* np.interp(v, x, y) exactly (its linear search for up to 4 points, exact at breakpoints). */
static double interp(double v, const double *x, uint8_t shape) {
    const uint8_t *y = SHAPE_DEGREE[shape];
    int n = SHAPE_POINTS[shape];
    if (v > x[n - 1]) return y[n - 1];
    if (v < x[0]) return y[0];
    int j = 0;
    for (int i = 1; i < n && v >= x[i]; i++) j = i;
    if (j == n - 1 || x[j] == v) return y[j];
    double slope = ((double)y[j + 1] - (double)y[j]) / (x[j + 1] - x[j]);
    return slope * (v - x[j]) + (double)y[j];
}

/* The first universe index whose point is >= v (last + 1 if none). */
static int32_t first_at_or_above(double v, int32_t last) {
    if (v <= 0.0) return 0;
    if (v > 1.0) return last + 1;
    double guess = ceil_d(v * (double)last);
    int32_t j = guess < 0.0 ? 0 : guess > (double)last ? last : (int32_t)guess;
    while (j > 0 && universe_at(j - 1, last) >= v) j--;
    while (j <= last && universe_at(j, last) < v) j++;
    return j;
}

static double sampled(const double *x, uint8_t shape, int32_t j, int32_t last) {
    return interp(universe_at(j, last), x, shape);
}

/* Splits output set s into linear pieces over universe indices, finds its highest sampled degree
 * and its Sugeno constant (the middle of the universe points where the degree is highest). */
static int prepare_output_set(fuzzy_off_arm_t *block, int s, const double *x, double *slopes) {
    uint8_t shape = SET_SHAPE[8 + s];
    int n = SHAPE_POINTS[shape];
    int32_t last = block->last_index;
    int32_t boundary[6];
    boundary[0] = 0;
    for (int k = 0; k < n; k++) boundary[k + 1] = first_at_or_above(x[k], last);
    boundary[n + 1] = last + 1;
    /* Piece k spans [boundary[k], boundary[k + 1]); piece k (1 <= k < n) is segment k - 1. */
    int count = 0;
    double peak = 0.0;
    for (int k = 0; k <= n; k++) {
        int32_t a = boundary[k], e = boundary[k + 1] - 1;
        if (a > e) continue;
        fuzzy_off_arm_piece_t *piece = &block->piece[s][count++];
        piece->start = a;
        piece->value = (fusion_real_t)sampled(x, shape, a, last);
        double slope = 0.0;
        if (k >= 1 && k < n) {
            const uint8_t *y = SHAPE_DEGREE[shape];
            slope = ((double)y[k] - (double)y[k - 1]) / (x[k] - x[k - 1]) / (double)last;
        }
        piece->slope = (fusion_real_t)slope;
        slopes[count - 1] = slope;
        peak = max_d(peak, max_d(sampled(x, shape, a, last), sampled(x, shape, e, last)));
    }
    block->piece_count[s] = (uint8_t)count;
    if (!(peak > 0.0)) {
        return fail(block, FUSION_ERR_PARAMETER, "Output set ", OUTPUT_SETS[s],
                    " is 0 everywhere on the output universe 0..1");
    }
    /* The core: each piece is monotone, so its points at the peak sit at one of its ends. */
    int32_t core_first = last, core_last = 0;
    for (int k = 0; k < count; k++) {
        int32_t a = block->piece[s][k].start;
        int32_t e = (k + 1 < count ? block->piece[s][k + 1].start : last + 1) - 1;
        bool at_start = sampled(x, shape, a, last) == peak, at_end = sampled(x, shape, e, last) == peak;
        int32_t lo = a, hi = e;
        if (at_start && !at_end) {  /* falling from the peak: the run at its start */
            hi = a;
            while (hi < e && sampled(x, shape, hi + 1, last) == peak) hi++;
        } else if (at_end && !at_start) {  /* rising to it */
            lo = e;
            while (lo > a && sampled(x, shape, lo - 1, last) == peak) lo--;
        } else if (!at_start) {
            continue;
        }
        if (lo < core_first) core_first = lo;
        if (hi > core_last) core_last = hi;
    }
    block->edge[s][0] = (fusion_real_t)sampled(x, shape, 0, last);
    block->edge[s][1] = (fusion_real_t)sampled(x, shape, last, last);
    block->output_peak[s] = (fusion_real_t)peak;
    block->output_constant[s] = (fusion_real_t)((universe_at(core_first, last) + universe_at(core_last, last)) / 2.0);
    return FUSION_OK;
}

/* The pointwise minimum of the sampled output sets in `mask`, as nonzero linear pieces (init,
 * in double): between the sets' piece boundaries each set is one line, and the lowest line
 * changes at most once per other line. Values at piece starts are exact samples. */
static int build_term(fuzzy_off_arm_t *block, int mask, double (*x)[4], double (*slopes)[5]) {
    int32_t last = block->last_index;
    int32_t bounds[16];
    int bound_count = 0;
    for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
        if (!(mask >> s & 1)) continue;
        for (int k = 0; k < block->piece_count[s]; k++) {
            int32_t b = block->piece[s][k].start;
            int i = bound_count++;
            while (i > 0 && bounds[i - 1] > b) {  /* insertion: keep them sorted */
                bounds[i] = bounds[i - 1];
                i--;
            }
            bounds[i] = b;
        }
    }
    bounds[bound_count] = last + 1;
    int first_span = block->term_first[mask - 1];
    int spans = first_span;
    for (int r = 0; r < bound_count; r++) {
        int32_t a = bounds[r], e = bounds[r + 1] - 1;
        if (a > e) continue;  /* a repeated boundary */
        double value[3], slope[3];
        int lines = 0;
        for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
            if (!(mask >> s & 1)) continue;
            int k = block->piece_count[s] - 1;
            while (block->piece[s][k].start > a) k--;
            value[lines] = sampled(x[s], SET_SHAPE[8 + s], a, last);
            slope[lines++] = slopes[s][k];
        }
        int current = 0;
        for (int k = 1; k < lines; k++) {
            if (value[k] < value[current] || (value[k] == value[current] && slope[k] < slope[current])) current = k;
        }
        for (int32_t q = a;;) {
            int32_t best = e + 1;
            int next = -1;
            for (int k = 0; k < lines; k++) {
                if (!(slope[k] < slope[current])) continue;
                double crossing = (value[k] - value[current]) / (slope[current] - slope[k]);
                if (!(crossing < (double)(e - a))) continue;
                int32_t j = a + (crossing > 0.0 ? (int32_t)crossing : 0) + 1;
                if (j <= q) j = q + 1;
                if (j < best) {
                    best = j;
                    next = k;
                }
            }
            double start = 1.0;
            for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
                if (mask >> s & 1) start = min_d(start, sampled(x[s], SET_SHAPE[8 + s], q, last));
            }
            if (start > 0.0 || slope[current] > 0.0) {
                if (spans == FUZZY_OFF_ARM_SPANS) {
                    return fail(block, FUSION_ERR_CAPACITY, "The output sets need more pieces than FUZZY_OFF_ARM_SPANS", NULL, NULL);
                }
                fuzzy_off_arm_span_t *span = &block->span[spans++];
                span->first = (int16_t)q;
                span->last = (int16_t)(best - 1);
                span->value = (fusion_real_t)start;
                span->slope = (fusion_real_t)slope[current];
            }
            if (next < 0) break;
            q = best;
            current = next;
        }
    }
    block->term_count[mask - 1] = (uint8_t)(spans - first_span);
    if (mask < 7) block->term_first[mask] = (uint8_t)spans;
    return FUSION_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Init                                                                                        */
/* ------------------------------------------------------------------------------------------ */

size_t fuzzy_off_arm_instance_size(void) { return sizeof(fuzzy_off_arm_t); }

static int choose(const char *text, const char *const *options, int count) {
    for (int i = 0; i < count; i++) {
        if (fusion_text_equals(text, options[i])) return i;
    }
    return -1;
}

static int fail_choice(fuzzy_off_arm_t *block, const char *name, const char *options, const char *text) {
    fuzzy_message_t message = start_message(block);
    fuzzy_message_text(&message, "Parameter '");
    fuzzy_message_text(&message, name);
    fuzzy_message_text(&message, "' must be one of ");
    fuzzy_message_text(&message, options);
    fuzzy_message_text(&message, "; got '");
    fuzzy_message_text(&message, text != NULL ? text : "(null)");
    fuzzy_message_text(&message, "'");
    return FUSION_ERR_PARAMETER;
}

/* off_arm.py _average_length: round(T x fs) samples (at least 1); the tail keeps length - 1. */
static int average_capacity(fuzzy_off_arm_t *block, const char *name, float seconds, float fs,
                            uint32_t *capacity) {
    if (!(seconds >= 0.0f && seconds <= 3600.0f)) {
        return fail_value(block, name, "must be from 0 to 3600 seconds", (double)seconds);
    }
    double length = round_half_even((double)seconds * (double)fs);  /* Python's round */
    if (length < 1.0) length = 1.0;
    if (length > SERVER_MAX_AVERAGE_SAMPLES || length > (double)FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES) {
        bool server = length > SERVER_MAX_AVERAGE_SAMPLES;
        fuzzy_message_t message = start_message(block);
        fuzzy_message_text(&message, "Parameter '");
        fuzzy_message_text(&message, name);
        fuzzy_message_text(&message, "' (");
        fuzzy_message_number(&message, (double)seconds);
        fuzzy_message_text(&message, " s at ");
        fuzzy_message_number(&message, (double)fs);
        fuzzy_message_text(&message, " Hz) spans ");
        fuzzy_message_number(&message, length);
        fuzzy_message_text(&message, " samples; at most ");
        fuzzy_message_int(&message, server ? 200000 : FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES);
        fuzzy_message_text(&message, server ? " are supported. Shorten it or resample."
                                            : " fit the device (FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES)");
        return server ? FUSION_ERR_PARAMETER : FUSION_ERR_CAPACITY;
    }
    *capacity = (uint32_t)length - 1u;
    return FUSION_OK;
}

static int check_positive(fuzzy_off_arm_t *block, const char *name, const char *unit, float value) {
    if (value > 0.0f) return FUSION_OK;
    fuzzy_message_t message = start_message(block);
    fuzzy_message_text(&message, "Parameter '");
    fuzzy_message_text(&message, name);
    fuzzy_message_text(&message, "' must be above 0 ");
    fuzzy_message_text(&message, unit);
    fuzzy_message_text(&message, "; got ");
    fuzzy_message_number(&message, (double)value);
    return FUSION_ERR_PARAMETER;
}

int fuzzy_off_arm_init(fuzzy_off_arm_t *block, const fuzzy_off_arm_params_t *params, float sampling_freq,
                       const int columns[FUZZY_OFF_ARM_DECLARED_AXES], size_t input_axes) {
    static const char *const MOTION_INPUTS[] = {"events", "quantity", "magnitude"};
    static const char *const INFERENCES[] = {"centroid", "bisector", "mom", "sugeno"};
    static const char *const RULE_BASES[] = {"article", "reduced", "custom"};
    static const char *const AXIS_NAMES[] = {"light", "motion", "hr_locked"};
    if (block == NULL) return FUSION_ERR_PARAMETER;
    memset(block, 0, sizeof *block);
    if (params == NULL) return fail(block, FUSION_ERR_PARAMETER, "No parameters given", NULL, NULL);
    int status;

    /* The fuzzy system, in the order the server checks it (build_system). */
    if (params->universe_points < 11 || params->universe_points > 10001) {
        return fail_value(block, "universe-points", "must be from 11 to 10001", (double)params->universe_points);
    }
    block->last_index = params->universe_points - 1;
    block->step = (fusion_real_t)(1.0 / (double)block->last_index);
    int rule_base = choose(params->rule_base, RULE_BASES, 3);
    if (rule_base < 0) return fail_choice(block, "rule-base", "article, reduced, custom", params->rule_base);
    const char *texts[11] = {params->light_low, params->light_mid, params->light_high,
                             params->motion_low, params->motion_moderate, params->motion_high,
                             params->hr_not_locked, params->hr_locked, params->on_arm,
                             params->probably_off, params->certainly_off};
    double x[11][4];
    for (int i = 0; i < 11; i++) {
        status = parse_set(block, i, texts[i], x[i]);
        if (status != FUSION_OK) return status;
    }
    fuzzy_message_t message = start_message(block);
    if (rule_base == 2) {
#if FUZZY_RULES_JSON
        status = fuzzy_rules_parse(&block->rules, params->custom_rules, INPUT_VARIABLES, 3,
                                   FUZZY_OFF_ARM_INPUT_SETS, &OUTPUT_VARIABLE, &message);
#else
        return fail(block, FUSION_ERR_UNSUPPORTED, "Parameter 'rule-base' custom: this build has no rule-base "
                    "parser (built with FUZZY_RULES_JSON=0); use article or reduced", NULL, NULL);
#endif
    } else {
        status = fuzzy_rules_load(&block->rules, rule_base == 0 ? ARTICLE_RULES : REDUCED_RULES,
                                  FUZZY_OFF_ARM_INPUT_SETS, &message);
    }
    if (status != FUSION_OK) return status;
    double slopes[FUZZY_OFF_ARM_OUTPUT_SETS][5];
    for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
        status = prepare_output_set(block, s, x[8 + s], slopes[s]);
        if (status != FUSION_OK) return status;
    }
    for (int mask = 1; mask < 8; mask++) {
        status = build_term(block, mask, &x[8], slopes);
        if (status != FUSION_OK) return status;
    }
    block->rule_set = (uint8_t)rule_base;
    for (int i = 0; i < FUZZY_OFF_ARM_INPUT_SETS; i++) {
        fuzzy_off_arm_set_t *set = &block->input_set[i];
        set->shape = SET_SHAPE[i];
        int n = SHAPE_POINTS[set->shape];
        for (int k = 0; k < n; k++) set->x[k] = (fusion_real_t)x[i][k];
        for (int k = 0; k + 1 < n; k++) {
            fusion_real_t width = set->x[k + 1] - set->x[k];
            set->inverse_width[k] = width > FR(0.0) ? FR(1.0) / width : FR(0.0);
        }
    }
    memcpy(block->motion_x, x[3], sizeof block->motion_x);
    if (!(params->no_rule_output >= 0.0f && params->no_rule_output <= 1.0f)) {
        return fail_value(block, "no-rule-output", "must be an off-arm certainty from 0 to 1",
                          (double)params->no_rule_output);
    }
    block->no_rule_output = (fusion_real_t)params->no_rule_output;

    /* The stream (preprocess). */
    if (!(isfinite(sampling_freq) && sampling_freq > 0.0f)) {
        fuzzy_message_t m = start_message(block);
        fuzzy_message_text(&m, "'sampling_freq' must be above 0 Hz; got ");
        fuzzy_message_number(&m, (double)sampling_freq);
        return FUSION_ERR_PARAMETER;
    }
    if (columns == NULL || input_axes == 0) {
        return fail(block, FUSION_ERR_AXES, "fuzzy-off-arm needs the axes light, motion, hr_locked", NULL, NULL);
    }
    for (int i = 0; i < FUZZY_OFF_ARM_DECLARED_AXES; i++) {
        if (columns[i] < 0 || (size_t)columns[i] >= input_axes) {
            return fail(block, FUSION_ERR_AXES, "fuzzy-off-arm needs the axes light, motion, hr_locked; missing: ",
                        AXIS_NAMES[i], columns[i] < 0 ? "" : " (its column is past the window's axes)");
        }
        block->column[i] = (size_t)columns[i];
    }
    block->input_axes = input_axes;
    int motion_input = choose(params->motion_input, MOTION_INPUTS, 3);
    if (motion_input < 0) {
        return fail_choice(block, "motion-input", "events, quantity, magnitude", params->motion_input);
    }
    block->motion_input = (uint8_t)motion_input;
    status = average_capacity(block, "hr-average-time", params->hr_average_time, sampling_freq, &block->hr_capacity);
    if (status != FUSION_OK) return status;
    if (motion_input != MOTION_EVENTS) {
        status = average_capacity(block, "motion-average-time", params->motion_average_time, sampling_freq,
                                  &block->motion_capacity);
        if (status != FUSION_OK) return status;
    }
    if (motion_input == MOTION_EVENTS) {
        if ((status = check_positive(block, "motion-event-rate", "Hz", params->motion_event_rate)) != FUSION_OK ||
            (status = check_positive(block, "motion-rise-time", "s", params->motion_rise_time)) != FUSION_OK ||
            (status = check_positive(block, "motion-fall-time", "s", params->motion_fall_time)) != FUSION_OK) {
            return status;
        }
        double rate = (double)params->motion_event_rate;
        block->step_up = 1.0 / ((double)params->motion_rise_time * rate);
        block->step_down = 1.0 / ((double)params->motion_fall_time * rate);
        block->events_per_sample = rate / (double)sampling_freq;
    } else if (motion_input == MOTION_MAGNITUDE) {
        if ((status = check_positive(block, "gravity", "(in the motion axis's units)", params->gravity)) != FUSION_OK ||
            (status = check_positive(block, "motion-full-scale", "g", params->motion_full_scale)) != FUSION_OK) {
            return status;
        }
        block->gravity = (fusion_real_t)params->gravity;
        block->full_scale = (fusion_real_t)params->motion_full_scale;
    }
    int inference = choose(params->inference, INFERENCES, 4);
    if (inference < 0) {
        return fail_choice(block, "inference", "centroid, bisector, mom, sugeno", params->inference);
    }
    block->inference = (uint8_t)inference;
    /* continuing_overlapping_windows (dsp/core/state.py). */
    float increase_ms = params->window_increase_ms;
    if (!(isfinite(increase_ms) && increase_ms >= 0.0f)) {
        return fail_value(block, "window-increase-ms",
                          "must be 0 (windows follow each other) or the impulse's window increase in ms",
                          (double)increase_ms);
    }
    double increase = round_half_even((double)increase_ms * (double)sampling_freq / 1000.0);
    block->increase = increase >= 1e15 ? (size_t)-1 : (size_t)increase;

    block->ready = true;
    fuzzy_off_arm_reset(block);
    return FUSION_OK;
}

static void motion_degrees(const fuzzy_off_arm_t *block, fuzzy_off_arm_stream_t *stream) {
    for (int i = 0; i < 3; i++) {
        stream->motion_degree[i] = (fusion_real_t)degree_double(block->motion_x[i], SET_SHAPE[3 + i],
                                                                stream->motion_level);
    }
}

void fuzzy_off_arm_reset(fuzzy_off_arm_t *block) {
    if (block == NULL) return;
    memset(&block->stream, 0, sizeof block->stream);
    block->hr_head = block->motion_head = 0;
    motion_degrees(block, &block->stream);  /* a stream starts at rest: level 0 */
    block->message[0] = '\0';
}

size_t fuzzy_off_arm_feature_count(const fuzzy_off_arm_t *block) {
    if (block == NULL || !block->ready) return 0;
    return (size_t)FUZZY_OFF_ARM_INPUT_SETS + block->rules.rule_count + 3u;
}

const char *fuzzy_off_arm_message(const fuzzy_off_arm_t *block) {
    return block == NULL ? "" : block->message;
}

/* ------------------------------------------------------------------------------------------ */
/* Composite motion from events (off_arm.py motion_from_events)                                */
/* ------------------------------------------------------------------------------------------ */

/* Synthetic no-motion events up to `age` samples after the real one: floor(age x rate / fs +
 * slack), in double exactly as the server computes it. In float32, age x rate / fs is off by up
 * to an ulp, which moves an event that falls exactly on a sample (2 Hz at 10 Hz: every 5th) to
 * the next sample whenever the product rounds down. */
static double synthetic_before(const fuzzy_off_arm_t *block, int64_t age) {
    return floor_d((double)age * block->events_per_sample + TIME_SLACK);
}

/* The first age after `age` at which another synthetic event falls. */
static int64_t next_synthetic(const fuzzy_off_arm_t *block, int64_t age) {
    double wanted = synthetic_before(block, age) + 1.0;
    double guess = ceil_d((wanted - TIME_SLACK) / block->events_per_sample);
    if (!(guess < 4e18)) return INT64_MAX;  /* never, at any realistic stream length */
    int64_t next = (int64_t)guess;
    if (next <= age) next = age + 1;
    while (synthetic_before(block, next) < wanted) next++;
    while (next - 1 > age && synthetic_before(block, next - 1) >= wanted) next--;
    return next;
}

/* Returns whether the level (and so its degrees) changed. */
static bool motion_event(const fuzzy_off_arm_t *block, fuzzy_off_arm_stream_t *stream, fusion_real_t event) {
    double change;
    if (event > FR(0.0)) {
        stream->pending = false;
        change = block->step_up;
    } else if (event < FR(0.0)) {
        stream->pending = true;
        stream->no_motion_age = 0;
        stream->next_synthetic = next_synthetic(block, 0);
        change = -block->step_down;
    } else {
        if (!stream->pending) return false;
        int64_t age = ++stream->no_motion_age;
        if (age < stream->next_synthetic) return false;
        double count = synthetic_before(block, age) - synthetic_before(block, age - 1);
        stream->next_synthetic = next_synthetic(block, age);
        change = -(block->step_down * count);
        if (change == 0.0) return false;
    }
    /* Level changes are rare (events), so the level stays in double like the server's: it sits
     * on multiples of the step, and whether it is 0.49999999999999994 or 0.5 decides which sets
     * fire (at ~1e-16, which matters when nothing else fires). */
    double level = min_d(1.0, max_d(0.0, stream->motion_level + change));
    if (level < LEVEL_SNAP) {
        level = 0.0;
    } else if (level > 1.0 - LEVEL_SNAP) {
        level = 1.0;
    }
    bool changed = level != stream->motion_level;
    stream->motion_level = level;
    if (changed) motion_degrees(block, stream);
    return changed;
}

/* ------------------------------------------------------------------------------------------ */
/* Running means (off_arm.py running_mean), compensated                                        */
/* ------------------------------------------------------------------------------------------ */

/* sum + error holds the tail's sum to about float32 squared: the exact error of each addition
 * goes into `error` (Neumaier), and the pair is renormalised, so a stream of any length does not
 * drift. Sums of 0/1 values stay exact integers, so a fully locked heart rate averages to 1. */
static void compensated_add(fusion_real_t *sum, fusion_real_t *error, fusion_real_t x) {
    fusion_real_t total = *sum + x;
    if (fr_fabs(*sum) >= fr_fabs(x)) {
        *error += (*sum - total) + x;
    } else {
        *error += (x - total) + *sum;
    }
    fusion_real_t joined = total + *error;
    *error -= joined - total;
    *sum = joined;
}

/* The mean of the tail and x (over count + 1 samples), then x joins the tail and, if it is
 * full, `leaving` (the sample capacity before x) leaves it. */
static fusion_real_t running_mean(fusion_real_t *sum, fusion_real_t *error, uint32_t *count, uint32_t capacity,
                                  fusion_real_t x, fusion_real_t leaving) {
    compensated_add(sum, error, x);
    fusion_real_t mean = (*sum + *error) / (fusion_real_t)(*count + 1u);  /* divided, so k / k is 1 */
    if (*count == capacity) {
        compensated_add(sum, error, -leaving);
    } else {
        (*count)++;
    }
    return mean;
}

/* ------------------------------------------------------------------------------------------ */
/* Mamdani defuzzification in closed form (fuzzy_logic.py _Compiled.mamdani)                   */
/* ------------------------------------------------------------------------------------------ */
/* The server samples each output set on the universe, clips it at its rule strength, joins the
 * sets by max and integrates the piecewise-linear curve through the samples. Every sampled set is
 * linear in the universe index between its breakpoints, so the aggregate is too between a few
 * dozen split points (breakpoints, clip points, crossings of two sets): the sums the server forms
 * over the samples are closed forms over those pieces. The centroid needs only the totals, by
 * inclusion and exclusion (mamdani); the bisector walks the aggregate's pieces in order to find
 * its half-way segment (sweep, envelope, emit); the mean of maximum needs only where each set
 * reaches the peak (reaching). Exact sample indices matter only at vertical edges (fixed at init
 * in double); elsewhere a split off by one index changes nothing, as neighbouring pieces meet. */

static int32_t piece_end(const fuzzy_off_arm_piece_t *pieces, int count, int k, int32_t last) {
    return (k + 1 < count ? pieces[k + 1].start : last + 1) - 1;
}

static void append(fuzzy_off_arm_piece_t *out, int *count, int32_t start, fusion_real_t value, fusion_real_t slope) {
    if (*count > 0 && slope == FR(0.0) && out[*count - 1].slope == FR(0.0) && out[*count - 1].value == value) {
        return;  /* continues the previous flat piece */
    }
    out[*count].start = start;
    out[*count].value = value;
    out[*count].slope = slope;
    (*count)++;
}

/* Output set s clipped at `level`, as pieces. */
static int clip_set(const fuzzy_off_arm_t *block, int s, fusion_real_t level, fuzzy_off_arm_piece_t *out) {
    const fuzzy_off_arm_piece_t *pieces = block->piece[s];
    int count = 0, n = block->piece_count[s];
    for (int k = 0; k < n; k++) {
        int32_t a = pieces[k].start, e = piece_end(pieces, n, k, block->last_index);
        fusion_real_t v = pieces[k].value, slope = pieces[k].slope;
        fusion_real_t end = v + slope * (fusion_real_t)(e - a);
        if (slope == FR(0.0)) {
            append(out, &count, a, MIN_R(v, level), FR(0.0));
        } else if (slope > FR(0.0)) {
            if (v >= level) {
                append(out, &count, a, level, FR(0.0));
            } else if (end <= level) {
                append(out, &count, a, v, slope);
            } else {
                int32_t j = a + ceil_int(MIN_R((level - v) / slope, (fusion_real_t)(e - a)));
                if (j <= a) j = a + 1;
                append(out, &count, a, v, slope);
                append(out, &count, j, level, FR(0.0));
            }
        } else {
            if (v <= level) {
                append(out, &count, a, v, slope);
            } else if (end >= level) {
                append(out, &count, a, level, FR(0.0));
            } else {
                int32_t j = a + floor_int(MIN_R((v - level) / -slope, (fusion_real_t)(e - a - 1))) + 1;
                if (j <= a) j = a + 1;
                append(out, &count, a, level, FR(0.0));
                append(out, &count, j, v + slope * (fusion_real_t)(j - a), slope);
            }
        }
    }
    return count;
}

/* The bisector's walk over the aggregate's pieces (fuzzy_logic.py _bisector). */
typedef struct {
    bool found;
    int32_t last;
    fusion_real_t first;                          /* the aggregate's first sample */
    fusion_real_t target, threshold, prefix, previous, result;
} sweep_t;

/* One piece of the aggregate: samples a .. e, value v at a, rising by slope per index. */
static void emit(sweep_t *w, int32_t a, int32_t e, fusion_real_t v, fusion_real_t slope) {
    int32_t length = e - a + 1;
    fusion_real_t n = (fusion_real_t)length;
    /* _bisector: cumulative[k] = sum over segments 0..k of (y_k + y_k+1) (twice the area over the
     * width); the answer lies in the first segment k where it reaches the target. Inside this
     * piece, the segment k = a - 1 + t ends at a + t and cumulative[k] = base + (2t + 1) v + slope t^2. */
    fusion_real_t base = FR(2.0) * w->prefix - w->first;
#define CUMULATIVE(t) (base + (FR(2.0) * (fusion_real_t)(t) + FR(1.0)) * v + slope * (fusion_real_t)(t) * (fusion_real_t)(t))
    int32_t t_min = a == 0 ? 1 : 0;
    if (t_min <= length - 1 && CUMULATIVE(length - 1) >= w->threshold) {
        int32_t t = t_min;
        if (CUMULATIVE(t_min) < w->threshold) {
            /* The root of slope t^2 + 2 v t + r, in the form that stays accurate for slope ~ 0. */
            fusion_real_t r = base + v - w->threshold;
            fusion_real_t denominator = v + fr_sqrt(MAX_R(v * v - slope * r, FR(0.0)));
            fusion_real_t guess = denominator > FR(0.0) ? -r / denominator : (fusion_real_t)(length - 1);
            if (!(guess < (fusion_real_t)(length - 1))) guess = (fusion_real_t)(length - 1);
            t = ceil_int(MAX_R(guess, FR(0.0)));
            if (t < t_min + 1) t = t_min + 1;
            while (t > t_min + 1 && CUMULATIVE(t - 1) >= w->threshold) t--;
            while (t < length - 1 && CUMULATIVE(t) < w->threshold) t++;
        }
        int32_t k = a - 1 + t;
        fusion_real_t before = k == 0 ? FR(0.0) : t >= 1 ? CUMULATIVE(t - 1) : base - w->previous;
        fusion_real_t left = t >= 1 ? v + slope * (fusion_real_t)(t - 1) : w->previous;
        fusion_real_t right = v + slope * (fusion_real_t)t;
        fusion_real_t c = MAX_R((w->target - before) / FR(2.0), FR(0.0));
        fusion_real_t denominator = left + fr_sqrt(MAX_R(left * left + FR(2.0) * (right - left) * c, FR(0.0)));
        fusion_real_t fraction = denominator > FR(0.0) ? FR(2.0) * c / denominator : FR(0.0);
        fraction = MIN_R(MAX_R(fraction, FR(0.0)), FR(1.0));
        w->result = (fusion_real_t)k + fraction;
        w->found = true;
        return;
    }
#undef CUMULATIVE
    w->prefix += n * v + slope * n * (n - FR(1.0)) / FR(2.0);
    w->previous = v + slope * (n - FR(1.0));
}

/* The upper envelope of n lines (value at a, slope) over indices a .. e. The max of lines is
 * convex: each line takes over at most once, the steeper after the flatter. */
static void envelope(sweep_t *w, int32_t a, int32_t e, const fusion_real_t *value, const fusion_real_t *slope, int n) {
    int current = 0;
    for (int k = 1; k < n; k++) {
        if (value[k] > value[current] || (value[k] == value[current] && slope[k] > slope[current])) current = k;
    }
    int32_t q = a;
    for (;;) {
        int32_t best = e + 1;
        int next = -1;
        for (int k = 0; k < n; k++) {
            if (k == current || !(slope[k] > slope[current])) continue;
            /* line k is above from the first index past a + crossing */
            fusion_real_t crossing = (value[current] - value[k]) / (slope[k] - slope[current]);
            if (!(crossing < (fusion_real_t)(e - a))) continue;
            int32_t j = a + floor_int(MAX_R(crossing, FR(0.0))) + 1;
            if (j <= q) j = q + 1;
            if (j < best) {
                best = j;
                next = k;
            }
        }
        emit(w, q, best - 1, value[current] + slope[current] * (fusion_real_t)(q - a), slope[current]);
        if (next < 0 || w->found) return;
        q = best;
        current = next;
    }
}

/* Walks the aggregate of the clipped sets (max of up to 3 piece lists) from index 0 to last. */
static void sweep(const fuzzy_off_arm_piece_t list[][CLIPPED_PIECES], const int *count, int lists, sweep_t *w) {
    int cursor[FUZZY_OFF_ARM_OUTPUT_SETS] = {0, 0, 0};
    int32_t position = 0;
    while (position <= w->last && !w->found) {
        int32_t end = w->last;
        fusion_real_t value[FUZZY_OFF_ARM_OUTPUT_SETS] = {0}, slope[FUZZY_OFF_ARM_OUTPUT_SETS] = {0};
        int lines = 0;
        for (int l = 0; l < lists; l++) {
            const fuzzy_off_arm_piece_t *piece = &list[l][cursor[l]];
            if (cursor[l] + 1 < count[l] && list[l][cursor[l] + 1].start - 1 < end) end = list[l][cursor[l] + 1].start - 1;
            if (piece->value == FR(0.0) && piece->slope == FR(0.0)) continue;  /* a zero line never leads */
            value[lines] = piece->value + piece->slope * (fusion_real_t)(position - piece->start);
            slope[lines++] = piece->slope;
        }
        if (lines == 0) {
            emit(w, position, end, FR(0.0), FR(0.0));
        } else if (lines == 1) {
            emit(w, position, end, value[0], slope[0]);
        } else {
            envelope(w, position, end, value, slope, lines);
        }
        position = end + 1;
        for (int l = 0; l < lists; l++) {
            if (cursor[l] + 1 < count[l] && list[l][cursor[l] + 1].start == position) cursor[l]++;
        }
    }
}

/* The indices where output set s (unclipped) reaches `threshold`: one interval, as each set
 * rises, holds and falls. False if none. */
static bool reaching(const fuzzy_off_arm_t *block, int s, fusion_real_t threshold, int32_t *lo, int32_t *hi) {
    const fuzzy_off_arm_piece_t *pieces = block->piece[s];
    int n = block->piece_count[s];
    int32_t first = INT32_MAX, final = -1;
    for (int k = 0; k < n; k++) {
        int32_t a = pieces[k].start, e = piece_end(pieces, n, k, block->last_index);
        fusion_real_t v = pieces[k].value, slope = pieces[k].slope;
#define AT(j) (v + slope * (fusion_real_t)((j) - a))
        int32_t from = a, to = e;
        if (slope == FR(0.0)) {
            if (v < threshold) continue;
        } else if (slope > FR(0.0)) {
            if (AT(e) < threshold) continue;
            if (v < threshold) {
                from = a + ceil_int(MIN_R((threshold - v) / slope, (fusion_real_t)(e - a)));
                while (from > a && AT(from - 1) >= threshold) from--;
                while (from < e && AT(from) < threshold) from++;
            }
        } else {
            if (v < threshold) continue;
            if (AT(e) < threshold) {
                to = a + floor_int(MIN_R((v - threshold) / -slope, (fusion_real_t)(e - a)));
                while (to < e && AT(to + 1) >= threshold) to++;
                while (to > a && AT(to) < threshold) to--;
            }
        }
#undef AT
        if (from < first) first = from;
        if (to > final) final = to;
    }
    *lo = first;
    *hi = final;
    return final >= 0;
}

/* _mean_of_maximum: the mean universe point where the aggregate is within the tolerance of its
 * peak: the union of the intervals where each set strong enough reaches peak - tolerance. */
static fusion_real_t mean_of_maximum(const fuzzy_off_arm_t *block, const fusion_real_t *level) {
    fusion_real_t peak = FR(0.0);
    for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
        if (level[s] > FR(0.0)) peak = MAX_R(peak, MIN_R(level[s], block->output_peak[s]));
    }
    fusion_real_t threshold = peak - PEAK_TOLERANCE;
    if (threshold <= FR(0.0)) return FR(0.5);  /* every point counts: the universe's middle */
    int32_t lo[FUZZY_OFF_ARM_OUTPUT_SETS], hi[FUZZY_OFF_ARM_OUTPUT_SETS];
    int ranges = 0;
    for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
        if (level[s] >= threshold && reaching(block, s, threshold, &lo[ranges], &hi[ranges])) {
            /* keep them sorted by start */
            for (int r = ranges; r > 0 && lo[r] < lo[r - 1]; r--) {
                int32_t t = lo[r]; lo[r] = lo[r - 1]; lo[r - 1] = t;
                t = hi[r]; hi[r] = hi[r - 1]; hi[r - 1] = t;
            }
            ranges++;
        }
    }
    int32_t points = 0, total = 0;  /* at most 10001 points and 10001 x 10000 / 2 */
    int32_t from = -1, to = -2;
    for (int r = 0; r <= ranges; r++) {
        if (r < ranges && lo[r] <= to + 1) {
            if (hi[r] > to) to = hi[r];
            continue;
        }
        if (to >= from && from >= 0) {
            points += to - from + 1;
            total += (from + to) * (to - from + 1) / 2;
        }
        if (r < ranges) {
            from = lo[r];
            to = hi[r];
        }
    }
    if (points == 0) return FR(0.5);  /* cannot happen: the peak set reaches its own peak */
    return (fusion_real_t)total / (fusion_real_t)points * block->step;
}

/* Samples a .. e of value v + slope (j - a): add their sum and their index-weighted sum. */
static void add_line(int32_t a, int32_t e, fusion_real_t v, fusion_real_t slope, fusion_real_t *sum, fusion_real_t *moment) {
    fusion_real_t n = (fusion_real_t)(e - a + 1);
    fusion_real_t pairs = n * (n - FR(1.0)) / FR(2.0);  /* sum of t, t = 0 .. n-1 */
    fusion_real_t total = n * v + slope * pairs;
    *sum += total;
    *moment += (fusion_real_t)a * total + v * pairs + slope * pairs * (FR(2.0) * n - FR(1.0)) / FR(3.0);
}

/* The sums over one span of min(level, span). */
static void add_clipped(const fuzzy_off_arm_span_t *span, fusion_real_t level, fusion_real_t *sum, fusion_real_t *moment) {
    int32_t a = span->first, e = span->last;
    fusion_real_t v = span->value, slope = span->slope;
    fusion_real_t end = v + slope * (fusion_real_t)(e - a);
    if (slope == FR(0.0) || (slope > FR(0.0) ? v >= level : end >= level)) {
        add_line(a, e, MIN_R(v, level), FR(0.0), sum, moment);
    } else if (slope > FR(0.0) ? end <= level : v <= level) {
        add_line(a, e, v, slope, sum, moment);
    } else if (slope > FR(0.0)) {
        int32_t j = a + ceil_int(MIN_R((level - v) / slope, (fusion_real_t)(e - a)));
        if (j <= a) j = a + 1;
        add_line(a, j - 1, v, slope, sum, moment);
        add_line(j, e, level, FR(0.0), sum, moment);
    } else {
        int32_t j = a + floor_int(MIN_R((v - level) / -slope, (fusion_real_t)(e - a - 1))) + 1;
        if (j <= a) j = a + 1;
        add_line(a, j - 1, level, FR(0.0), sum, moment);
        add_line(j, e, v + slope * (fusion_real_t)(j - a), slope, sum, moment);
    }
}

static fusion_real_t mamdani(const fuzzy_off_arm_t *block, const fusion_real_t *level) {
    if (block->inference == INFER_MOM) return mean_of_maximum(block, level);
    /* The sums of the aggregate max_s min(level_s, set_s) over the samples, by inclusion and
     * exclusion: max(a, b, c) = a + b + c - min(a, b) - min(a, c) - min(b, c) + min(a, b, c), and
     * min(min(l1, s1), min(l2, s2)) = min(min(l1, l2), min(s1, s2)), so each term is one fixed
     * function (a set, or the minimum of several; most pairs of the default sets never meet)
     * clipped at one level. */
    fusion_real_t sum = FR(0.0), moment = FR(0.0);
    for (int mask = 1; mask < 8; mask++) {
        int count = block->term_count[mask - 1];
        if (count == 0) continue;
        fusion_real_t clip = FR(1.0);
        bool odd = false;
        for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
            if (mask >> s & 1) {
                clip = MIN_R(clip, level[s]);
                odd = !odd;
            }
        }
        if (clip <= FR(0.0)) continue;
        fusion_real_t term_sum = FR(0.0), term_moment = FR(0.0);
        const fuzzy_off_arm_span_t *span = &block->span[block->term_first[mask - 1]];
        for (int k = 0; k < count; k++) add_clipped(&span[k], clip, &term_sum, &term_moment);
        sum += odd ? term_sum : -term_sum;
        moment += odd ? term_moment : -term_moment;
    }
    fusion_real_t first = FR(0.0), final = FR(0.0);
    for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
        first = MAX_R(first, MIN_R(level[s], block->edge[s][0]));
        final = MAX_R(final, MIN_R(level[s], block->edge[s][1]));
    }
    /* _trapezoid_weights over the width h: area = sum - (first + final) / 2; moment / h^2 =
     * sum(j y_j) + first / 6 - (last / 2 + 1 / 6) final. */
    fusion_real_t area = sum - (first + final) / FR(2.0);
    if (block->inference == INFER_CENTROID) {
        moment += first / FR(6.0) - ((fusion_real_t)block->last_index / FR(2.0) + FR(1.0) / FR(6.0)) * final;
        return block->step * moment / area;
    }
    fuzzy_off_arm_piece_t list[FUZZY_OFF_ARM_OUTPUT_SETS][CLIPPED_PIECES];
    int lengths[FUZZY_OFF_ARM_OUTPUT_SETS], lists = 0;
    for (int s = 0; s < FUZZY_OFF_ARM_OUTPUT_SETS; s++) {
        if (level[s] > FR(0.0)) {
            lengths[lists] = clip_set(block, s, level[s], list[lists]);
            lists++;
        }
    }
    sweep_t w;
    memset(&w, 0, sizeof w);
    w.last = block->last_index;
    w.first = first;
    w.target = area;
    w.threshold = area * (FR(1.0) - BISECTOR_SLACK);
    sweep(list, lengths, lists, &w);
    return w.found ? w.result * block->step : FR(1.0);
}

/* ------------------------------------------------------------------------------------------ */
/* Windows                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Samples first .. first + count - 1 of the declared axes whose `out` is not NULL. */
static int read_samples(const fuzzy_off_arm_t *block, const fusion_window_t *window, size_t first, size_t count,
                        fusion_real_t *const out[FUZZY_OFF_ARM_DECLARED_AXES]) {
    float buffer[FUZZY_OFF_ARM_READ_VALUES];
    size_t axes = block->input_axes;
    if (axes > FUZZY_OFF_ARM_READ_VALUES) {  /* a very wide window: one value at a time */
        for (size_t i = 0; i < count; i++) {
            for (int a = 0; a < FUZZY_OFF_ARM_DECLARED_AXES; a++) {
                if (out[a] == NULL) continue;
                if (window->read(window->context, (first + i) * axes + block->column[a], 1, buffer) != 0) {
                    return FUSION_ERR_READ;
                }
                out[a][i] = (fusion_real_t)buffer[0];
            }
        }
        return FUSION_OK;
    }
    size_t per_read = FUZZY_OFF_ARM_READ_VALUES / axes;
    for (size_t done = 0; done < count;) {
        size_t m = count - done < per_read ? count - done : per_read;
        if (window->read(window->context, (first + done) * axes, m * axes, buffer) != 0) return FUSION_ERR_READ;
        for (int a = 0; a < FUZZY_OFF_ARM_DECLARED_AXES; a++) {
            if (out[a] == NULL) continue;
            for (size_t i = 0; i < m; i++) out[a][done + i] = (fusion_real_t)buffer[i * axes + block->column[a]];
        }
        done += m;
    }
    return FUSION_OK;
}

/* Magnitude mode: the deviation from 1 g as a fraction of full scale (divided, as the server
 * does, so a device at rest reads exactly 0). */
static fusion_real_t motion_value(const fuzzy_off_arm_t *block, fusion_real_t raw) {
    if (block->motion_input != MOTION_MAGNITUDE) return raw;
    return fr_fabs(raw / block->gravity - FR(1.0)) / block->full_scale;
}

static int read_axis(const fuzzy_off_arm_t *block, const fusion_window_t *window, size_t first, size_t count,
                     int axis, fusion_real_t *out) {
    fusion_real_t *columns[FUZZY_OFF_ARM_DECLARED_AXES] = {NULL, NULL, NULL};
    columns[axis] = out;
    int status = read_samples(block, window, first, count, columns);
    if (status == FUSION_OK && axis == AXIS_MOTION) {
        for (size_t i = 0; i < count; i++) out[i] = motion_value(block, out[i]);
    }
    return status;
}

/* For samples c .. c + k - 1 of the window, the sample each leaves in its running average's
 * tail when that is full: from the tail kept in the state (left untouched until the window is
 * done), or from this window, read again. */
static int leaving_samples(const fuzzy_off_arm_t *block, const fusion_window_t *window, size_t c, size_t k,
                           int axis, uint32_t capacity, uint32_t head, uint32_t kept,
                           const fusion_real_t *ring, fusion_real_t *out) {
    size_t q = 0;
    for (; q < k; q++) {
        int64_t j = (int64_t)kept + (int64_t)(c + q) - (int64_t)capacity;  /* in tail + window */
        if (j >= (int64_t)kept) break;
        if (j >= 0) out[q] = ring[(head + (uint32_t)j) % capacity];
    }
    if (q == k) return FUSION_OK;
    return read_axis(block, window, c + q - capacity, k - q, axis, out + q);
}

/* After the window: the samples before `handed` (the first `handed` of this window) join the
 * tail, the oldest leaving. */
static int push_tail(const fuzzy_off_arm_t *block, const fusion_window_t *window, size_t handed, int axis,
                     uint32_t capacity, uint32_t *head, uint32_t kept, fusion_real_t *ring) {
    fusion_real_t values[FUZZY_OFF_ARM_CHUNK_SAMPLES];
    size_t first = handed > capacity ? handed - capacity : 0;
    for (size_t c = first; c < handed; c += FUZZY_OFF_ARM_CHUNK_SAMPLES) {
        size_t k = handed - c < FUZZY_OFF_ARM_CHUNK_SAMPLES ? handed - c : FUZZY_OFF_ARM_CHUNK_SAMPLES;
        int status = read_axis(block, window, c, k, axis, values);
        if (status != FUSION_OK) return status;
        for (size_t i = 0; i < k; i++) {
            if (kept < capacity) {
                ring[(*head + kept) % capacity] = values[i];
                kept++;
            } else {
                ring[*head] = values[i];
                *head = *head + 1 == capacity ? 0 : *head + 1;
            }
        }
    }
    return FUSION_OK;
}

static int bad_sample(fuzzy_off_arm_t *block, const char *what, size_t index, fusion_real_t value) {
    fuzzy_message_t message = start_message(block);
    fuzzy_message_text(&message, what);
    fuzzy_message_text(&message, "; sample ");
    fuzzy_message_int(&message, (long)index);
    fuzzy_message_text(&message, " = ");
    fuzzy_message_number(&message, (double)value);
    return FUSION_ERR_INPUT;
}

/* off_arm.py _check_inputs, for one sample. */
static int check_sample(fuzzy_off_arm_t *block, size_t index, fusion_real_t light, fusion_real_t motion,
                        fusion_real_t hr) {
    if (!isfinite(light)) return bad_sample(block, "Axis 'light' must be finite numbers", index, light);
    if (!isfinite(motion)) return bad_sample(block, "Axis 'motion' must be finite numbers", index, motion);
    if (!isfinite(hr)) return bad_sample(block, "Axis 'hr_locked' must be finite numbers", index, hr);
    if (light < FR(0.0)) {
        return bad_sample(block, "Axis 'light' is ambient light sensor counts and must be >= 0", index, light);
    }
    if (hr < FR(0.0) || hr > FR(1.0)) {
        return bad_sample(block, "Axis 'hr_locked' must be 1 (heart rate locked) or 0 (not locked), or a "
                                 "fraction between", index, hr);
    }
    switch (block->motion_input) {
        case MOTION_EVENTS:
            if (motion != FR(1.0) && motion != FR(0.0) && motion != FR(-1.0)) {
                return bad_sample(block, "Axis 'motion' must hold motion events: +1 any-motion, -1 no-motion, "
                                         "0 none (parameter 'motion-input' = events)", index, motion);
            }
            break;
        case MOTION_QUANTITY:
            if (motion < FR(0.0) || motion > FR(1.0)) {
                return bad_sample(block, "Axis 'motion' must be a motion quantity from 0 (still) to 1 (moving) "
                                         "(parameter 'motion-input' = quantity)", index, motion);
            }
            break;
        default:
            if (motion < FR(0.0)) {
                return bad_sample(block, "Axis 'motion' must be the acceleration magnitude, >= 0 (parameter "
                                         "'motion-input' = magnitude)", index, motion);
            }
            break;
    }
    return FUSION_OK;
}

int fuzzy_off_arm_process(fuzzy_off_arm_t *block, const fusion_window_t *window, float *features, size_t capacity) {
    if (block == NULL) return FUSION_ERR_PARAMETER;
    if (!block->ready) return fail(block, FUSION_ERR_PARAMETER, "fuzzy_off_arm_init has not succeeded", NULL, NULL);
    block->message[0] = '\0';
    if (window == NULL || window->read == NULL) return fail(block, FUSION_ERR_READ, "No window reader", NULL, NULL);
    if (window->input_axes != block->input_axes) {
        return fail(block, FUSION_ERR_AXES, "The window's axes differ from those given to fuzzy_off_arm_init", NULL, NULL);
    }
    size_t n = window->samples;
    if (n == 0) {
        return fail(block, FUSION_ERR_INPUT, "The window must hold at least one sample of light, motion and hr_locked",
                    NULL, NULL);
    }
    size_t feature_count = fuzzy_off_arm_feature_count(block);
    if (features == NULL || capacity < feature_count) {
        return fail(block, FUSION_ERR_CAPACITY, "The feature buffer is smaller than fuzzy_off_arm_feature_count()",
                    NULL, NULL);
    }
    const fuzzy_rule_base_t *rules = &block->rules;
    int rule_count = rules->rule_count;
    /* continuing_overlapping_windows: with a window increase shorter than the window, the state
     * handed on is the one after the first `increase` samples, where the next window starts. */
    size_t handed = block->increase > 0 && block->increase < n ? block->increase : n;
    bool averaged_motion = block->motion_input != MOTION_EVENTS && block->motion_capacity > 0;

    fuzzy_off_arm_stream_t work = block->stream, at_handed = work;
    /* Window totals per feature (memberships, rules, certainty), compensated; chunk sums plain. */
    fusion_real_t total[FUZZY_OFF_ARM_MAX_FEATURES], total_error[FUZZY_OFF_ARM_MAX_FEATURES];
    int sums = FUZZY_OFF_ARM_INPUT_SETS + rule_count + 1;
    for (int i = 0; i < sums; i++) total[i] = total_error[i] = FR(0.0);
    size_t above = 0;
    fusion_real_t certainty = FR(0.0);
    fusion_real_t cached_level[FUZZY_OFF_ARM_OUTPUT_SETS] = {FR(-1.0), FR(-1.0), FR(-1.0)};
    fusion_real_t cached_output = FR(0.0);
    /* Real streams repeat: light and the heart-rate lock hold for many samples, the events-mode
     * motion level changes only at events. Degrees are recomputed when their input changes, the
     * rules and the inference when a degree does (NaN: nothing computed yet). */
    fusion_real_t registers[FUZZY_RULES_MAX_REGISTERS], firing[FUZZY_RULES_MAX_RULES];
    fusion_real_t output = FR(0.0), last_light = (fusion_real_t)NAN, last_motion = (fusion_real_t)NAN,
                  last_hr = (fusion_real_t)NAN;
    if (block->motion_input == MOTION_EVENTS) {
        for (int i = 0; i < 3; i++) registers[3 + i] = work.motion_degree[i];
    }

    for (size_t c = 0; c < n; c += FUZZY_OFF_ARM_CHUNK_SAMPLES) {
        size_t k = n - c < FUZZY_OFF_ARM_CHUNK_SAMPLES ? n - c : FUZZY_OFF_ARM_CHUNK_SAMPLES;
        fusion_real_t light[FUZZY_OFF_ARM_CHUNK_SAMPLES], motion[FUZZY_OFF_ARM_CHUNK_SAMPLES],
            hr[FUZZY_OFF_ARM_CHUNK_SAMPLES], hr_leaving[FUZZY_OFF_ARM_CHUNK_SAMPLES],
            motion_leaving[FUZZY_OFF_ARM_CHUNK_SAMPLES];
        fusion_real_t *const columns[FUZZY_OFF_ARM_DECLARED_AXES] = {light, motion, hr};
        if (read_samples(block, window, c, k, columns) != FUSION_OK) {
            return fail(block, FUSION_ERR_READ, "The window reader failed", NULL, NULL);
        }
        for (size_t q = 0; q < k; q++) {
            int status = check_sample(block, c + q, light[q], motion[q], hr[q]);
            if (status != FUSION_OK) return status;
        }
        if ((block->hr_capacity > 0 &&
             leaving_samples(block, window, c, k, AXIS_HR, block->hr_capacity, block->hr_head,
                             block->stream.hr_count, block->hr_tail, hr_leaving) != FUSION_OK) ||
            (averaged_motion &&
             leaving_samples(block, window, c, k, AXIS_MOTION, block->motion_capacity, block->motion_head,
                             block->stream.motion_count, block->motion_tail, motion_leaving) != FUSION_OK)) {
            return fail(block, FUSION_ERR_READ, "The window reader failed", NULL, NULL);
        }
        fusion_real_t chunk[FUZZY_OFF_ARM_MAX_FEATURES];
        for (int i = 0; i < sums; i++) chunk[i] = FR(0.0);
        for (size_t q = 0; q < k; q++) {
            bool changed = false;
            /* Crisp inputs (preprocess) and their degrees. */
            fusion_real_t hr_level = block->hr_capacity == 0 ? hr[q]
                : running_mean(&work.hr_sum, &work.hr_error, &work.hr_count, block->hr_capacity, hr[q], hr_leaving[q]);
            if (light[q] != last_light) {
                last_light = light[q];
                for (int i = 0; i < 3; i++) registers[i] = degree(&block->input_set[i], last_light);
                changed = true;
            }
            if (block->motion_input == MOTION_EVENTS) {
                if (motion_event(block, &work, motion[q])) {
                    for (int i = 0; i < 3; i++) registers[3 + i] = work.motion_degree[i];
                    changed = true;
                }
            } else {
                fusion_real_t level = motion_value(block, motion[q]);
                if (averaged_motion) {
                    level = running_mean(&work.motion_sum, &work.motion_error, &work.motion_count,
                                         block->motion_capacity, level, motion_leaving[q]);
                }
                level = MIN_R(MAX_R(level, FR(0.0)), FR(1.0));
                if (level != last_motion) {
                    last_motion = level;
                    for (int i = 0; i < 3; i++) registers[3 + i] = degree(&block->input_set[3 + i], level);
                    changed = true;
                }
            }
            if (hr_level != last_hr) {
                last_hr = hr_level;
                registers[6] = degree(&block->input_set[6], hr_level);
                registers[7] = degree(&block->input_set[7], hr_level);
                changed = true;
            }
            /* Rules and inference (FuzzySystem.evaluate). */
            if (changed) {
                if (block->rule_set == 0) {
                    article_rules(registers, firing);
                } else if (block->rule_set == 1) {
                    reduced_rules(registers, firing);
                } else {
                    fuzzy_rules_evaluate(rules, registers, firing);
                }
                if (block->inference == INFER_SUGENO) {
                    fusion_real_t strength = FR(0.0), weighted = FR(0.0);
                    for (int r = 0; r < rule_count; r++) {
                        strength += firing[r];
                        weighted += block->output_constant[rules->consequent[r]] * firing[r];
                    }
                    output = strength > FR(0.0) ? weighted / strength : block->no_rule_output;
                } else {
                    /* Rules sharing a consequent join by max before clipping. */
                    fusion_real_t level[FUZZY_OFF_ARM_OUTPUT_SETS] = {FR(0.0), FR(0.0), FR(0.0)};
                    for (int r = 0; r < rule_count; r++) {
                        uint8_t s = rules->consequent[r];
                        if (firing[r] > level[s]) level[s] = firing[r];
                    }
                    if (level[0] != cached_level[0] || level[1] != cached_level[1] || level[2] != cached_level[2]) {
                        bool fired = level[0] > FR(0.0) || level[1] > FR(0.0) || level[2] > FR(0.0);
                        cached_output = fired ? mamdani(block, level) : block->no_rule_output;
                        memcpy(cached_level, level, sizeof level);
                    }
                    output = cached_output;
                }
            }
            for (int i = 0; i < FUZZY_OFF_ARM_INPUT_SETS; i++) chunk[i] += registers[i];
            for (int r = 0; r < rule_count; r++) chunk[FUZZY_OFF_ARM_INPUT_SETS + r] += firing[r];
            chunk[sums - 1] += output;
            if (output > OFF_ARM_THRESHOLD) above++;
            certainty = output;
            if (c + q + 1 == handed) at_handed = work;
        }
        for (int i = 0; i < sums; i++) compensated_add(&total[i], &total_error[i], chunk[i]);
    }

    fusion_real_t samples = (fusion_real_t)n;
    for (int i = 0; i < sums; i++) features[i] = (float)((total[i] + total_error[i]) / samples);
    features[sums] = (float)certainty;
    features[sums + 1] = (float)((fusion_real_t)above / samples);

    /* Hand the state on: the tails gain the samples before `handed`. */
    if ((block->hr_capacity > 0 &&
         push_tail(block, window, handed, AXIS_HR, block->hr_capacity, &block->hr_head, block->stream.hr_count,
                   block->hr_tail) != FUSION_OK) ||
        (averaged_motion &&
         push_tail(block, window, handed, AXIS_MOTION, block->motion_capacity, &block->motion_head,
                   block->stream.motion_count, block->motion_tail) != FUSION_OK)) {
        fuzzy_off_arm_reset(block);
        return fail(block, FUSION_ERR_READ, "The window reader failed on a second read of the window; "
                                            "the stream was reset", NULL, NULL);
    }
    block->stream = at_handed;
    return FUSION_OK;
}
