/* Reading the text parameters Studio passes as `const char *` (breakpoint lists such as "25, 50",
 * optional numbers such as "" or "0.98", option names such as "events") without the C library's
 * locale-dependent parsers: the same text means the same number on every target. */
#ifndef FUSION_TEXT_H
#define FUSION_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* True when `text` equals `expected` exactly (NULL equals nothing). */
bool fusion_text_equals(const char *text, const char *expected);

/* True when `text` is NULL or holds only spaces, tabs and line breaks. */
bool fusion_text_blank(const char *text);

/* Reads one decimal number at *cursor (an optional sign, digits with an optional '.', an optional
 * exponent) and moves *cursor past it. False when there is no number there or it is beyond
 * double's range (Python reads that as infinity). */
bool fusion_parse_number(const char **cursor, double *out);

/* Reads numbers separated by commas or semicolons (spaces around them allowed), as Python's
 * float() reads each part: an optional sign, digits with an optional '.', an optional exponent,
 * "inf"/"nan" refused. Stores at most `capacity` of them in `out` and returns how many the text
 * holds (which may exceed `capacity`), or -1 when a part is not a number (an empty text holds 0). */
int fusion_parse_numbers(const char *text, double *out, int capacity);

#ifdef __cplusplus
}
#endif

#endif
