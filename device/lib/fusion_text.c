#include "fusion_text.h"

#include <math.h>

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool fusion_text_equals(const char *text, const char *expected) {
    if (text == NULL || expected == NULL) {
        return false;
    }
    while (*text != '\0' && *text == *expected) {
        text++;
        expected++;
    }
    return *text == *expected;
}

bool fusion_text_blank(const char *text) {
    if (text == NULL) {
        return true;
    }
    for (; *text != '\0'; text++) {
        if (!is_space(*text)) {
            return false;
        }
    }
    return true;
}

/* One decimal number from *cursor, which moves past it. The digits are gathered as an integer
 * (up to 19 significant ones, more than double holds) and scaled by a power of ten once, so the
 * result is within an ulp or two of the correctly rounded value: far below float32's step. */
bool fusion_parse_number(const char **cursor, double *out) {
    const char *p = *cursor;
    bool negative = false;
    if (*p == '+' || *p == '-') {
        negative = *p == '-';
        p++;
    }
    unsigned long long mantissa = 0;
    int significant = 0, exponent = 0, digits = 0;
    for (; is_digit(*p); p++, digits++) {
        if (significant < 19) {
            mantissa = mantissa * 10u + (unsigned)(*p - '0');
            if (mantissa != 0) significant++;
        } else {
            exponent++;
        }
    }
    if (*p == '.') {
        for (p++; is_digit(*p); p++, digits++) {
            if (significant < 19) {
                mantissa = mantissa * 10u + (unsigned)(*p - '0');
                if (mantissa != 0) significant++;
                exponent--;
            }
        }
    }
    if (digits == 0) {
        return false;
    }
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        bool negative_exponent = false;
        if (*q == '+' || *q == '-') {
            negative_exponent = *q == '-';
            q++;
        }
        if (!is_digit(*q)) {
            return false;
        }
        int value = 0;
        for (; is_digit(*q); q++) {
            if (value < 10000) value = value * 10 + (*q - '0');
        }
        exponent += negative_exponent ? -value : value;
        p = q;
    }
    double number = (double)mantissa;
    if (mantissa != 0) {
        /* Powers of ten by repeated multiplication, not pow(): pow costs 4.6 KB of flash on a
         * Cortex-M, and up to 10^22 every step is exact. */
        if (exponent > 330) {
            return false; /* infinite, as Python reads it: refused */
        }
        if (exponent < -330) {
            exponent = -330; /* zero, or nearly: below anything a setting takes */
        }
        double scale = 1.0;
        int steps = exponent < 0 ? -exponent : exponent;
        for (int i = 0; i < steps; i++) scale *= 10.0; /* inf past 1e308, and then 0 or inf below */
        number = exponent < 0 ? number / scale : number * scale;
    }
    if (!isfinite(number)) {
        return false;
    }
    *out = negative ? -number : number;
    *cursor = p;
    return true;
}

int fusion_parse_numbers(const char *text, double *out, int capacity) {
    if (fusion_text_blank(text)) {
        return 0;
    }
    int count = 0;
    const char *p = text;
    for (;;) {
        while (is_space(*p)) p++;
        double value;
        if (!fusion_parse_number(&p, &value)) {
            return -1;
        }
        if (count < capacity) {
            out[count] = value;
        }
        count++;
        while (is_space(*p)) p++;
        if (*p == '\0') {
            return count;
        }
        if (*p != ',' && *p != ';') {
            return -1;
        }
        p++;
    }
}
