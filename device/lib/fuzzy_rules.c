#include "fuzzy_rules.h"

#include <math.h>
#include <string.h>

#include "fusion_text.h"

/* The server's own bounds (dsp/fusion/fuzzy_logic.py). */
#define SERVER_MAX_TEXT_CHARS 100000L
#define SERVER_MAX_RULES 500
#define SERVER_MAX_DEPTH 32
/* JSON nesting the syntax check follows (one bit per level). */
#define JSON_MAX_NESTING 64
/* A clause longer than this (whitespace runs counted as one) cannot name a variable and a set. */
#define CLAUSE_CHARS 64
#define CLAUSE_TOKENS 4

/* ------------------------------------------------------------------------------------------ */
/* Messages                                                                                    */
/* ------------------------------------------------------------------------------------------ */

void fuzzy_message_start(fuzzy_message_t *message, char *buffer, size_t capacity) {
    message->text = buffer;
    message->capacity = capacity;
    message->length = 0;
    if (capacity > 0) buffer[0] = '\0';
}

static void put_char(fuzzy_message_t *message, char c) {
    if (message->length + 1 < message->capacity) {
        message->text[message->length++] = c;
        message->text[message->length] = '\0';
    }
}

void fuzzy_message_span(fuzzy_message_t *message, const char *text, size_t length) {
    for (size_t i = 0; i < length && text[i] != '\0'; i++) put_char(message, text[i]);
}

void fuzzy_message_text(fuzzy_message_t *message, const char *text) {
    while (*text != '\0') put_char(message, *text++);
}

/* 32-bit arithmetic only: a 64-bit division would link libgcc's 700-byte __udivmoddi4. */
static void put_digits(fuzzy_message_t *message, uint32_t value) {
    char digits[10];
    int count = 0;
    do {
        digits[count++] = (char)('0' + (int)(value % 10u));
        value /= 10u;
    } while (value != 0u);
    while (count > 0) put_char(message, digits[--count]);
}

void fuzzy_message_int(fuzzy_message_t *message, long value) {
    if (value < 0) {
        put_char(message, '-');
        put_digits(message, (uint32_t)(-(value + 1)) + 1u);
    } else {
        put_digits(message, (uint32_t)value);
    }
}

void fuzzy_message_number(fuzzy_message_t *message, double value) {
    if (isnan(value)) {
        fuzzy_message_text(message, "nan");
        return;
    }
    if (value < 0.0) {
        put_char(message, '-');
        value = -value;
    }
    if (isinf(value)) {
        fuzzy_message_text(message, "inf");
        return;
    }
    if (value == 0.0) {
        put_char(message, '0');
        return;
    }
    /* Six significant digits as an integer, and the decimal exponent of the first (scaled by
     * tens rather than with log10 and pow, which would link 2 KB of libm for messages). */
    int exponent = 5;
    while (value >= 1e6) {
        value /= 10.0;
        exponent++;
    }
    while (value < 1e5) {
        value *= 10.0;
        exponent--;
    }
    uint32_t mantissa = (uint32_t)(value + 0.5);
    if (mantissa >= 1000000u) {
        mantissa = (mantissa + 5u) / 10u;
        exponent++;
    }
    char digits[6];
    for (int i = 5; i >= 0; i--) {
        digits[i] = (char)('0' + (int)(mantissa % 10u));
        mantissa /= 10u;
    }
    int used = 6;
    while (used > 1 && digits[used - 1] == '0') used--;
    if (exponent >= -4 && exponent < 6) {  /* %g's fixed notation: exponent -4 .. 5 */
        if (exponent < 0) {
            fuzzy_message_text(message, "0.");
            for (int i = -1; i > exponent; i--) put_char(message, '0');
            fuzzy_message_span(message, digits, (size_t)used);
        } else {
            for (int i = 0; i <= exponent; i++) put_char(message, i < used ? digits[i] : '0');
            if (used > exponent + 1) {
                put_char(message, '.');
                fuzzy_message_span(message, digits + exponent + 1, (size_t)(used - exponent - 1));
            }
        }
        return;
    }
    put_char(message, digits[0]);
    if (used > 1) {
        put_char(message, '.');
        fuzzy_message_span(message, digits + 1, (size_t)(used - 1));
    }
    put_char(message, 'e');
    put_char(message, exponent < 0 ? '-' : '+');
    if (exponent < 0) exponent = -exponent;
    if (exponent < 10) put_char(message, '0');
    put_digits(message, (uint32_t)exponent);
}

#if FUZZY_RULES_JSON
/* ------------------------------------------------------------------------------------------ */
/* JSON, read in place                                                                         */
/* ------------------------------------------------------------------------------------------ */

static const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool starts_with(const char *p, const char *word) {
    while (*word != '\0') {
        if (*p++ != *word++) return false;
    }
    return true;
}

/* Past a string starting at its opening quote; false on a syntax error (*p at the fault). */
static bool check_string(const char **cursor) {
    const char *p = *cursor + 1;
    for (;;) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *cursor = p + 1;
            return true;
        }
        if (c < 0x20u) break;  /* the end of the text, or a raw control character (strict JSON) */
        if (c == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++) {
                    if (hex_value(p[i]) < 0) {
                        *cursor = p;
                        return false;
                    }
                }
                p += 5;
                continue;
            }
            if (*p == '\0' || strchr("\"\\/bfnrt", *p) == NULL) break;
        }
        p++;
    }
    *cursor = p;
    return false;
}

/* Past a number (JSON's grammar, plus Python's NaN, Infinity and -Infinity) or a literal. */
static bool check_scalar(const char **cursor) {
    const char *p = *cursor;
    static const char *const literals[] = {"true", "false", "null", "NaN", "Infinity", "-Infinity"};
    for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++) {
        if (starts_with(p, literals[i])) {
            *cursor = p + strlen(literals[i]);
            return true;
        }
    }
    if (*p == '"') return check_string(cursor);
    if (*p == '-') p++;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (is_digit(*p)) p++;
    } else {
        *cursor = p;
        return false;
    }
    if (*p == '.') {
        p++;
        if (!is_digit(*p)) {
            *cursor = p;
            return false;
        }
        while (is_digit(*p)) p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!is_digit(*p)) {
            *cursor = p;
            return false;
        }
        while (is_digit(*p)) p++;
    }
    *cursor = p;
    return true;
}

/* A key and its colon. */
static bool check_key(const char **cursor) {
    if (**cursor != '"' || !check_string(cursor)) return false;
    *cursor = skip_space(*cursor);
    if (**cursor != ':') return false;
    *cursor = skip_space(*cursor + 1);
    return true;
}

enum { JSON_OK, JSON_SYNTAX, JSON_DEEP };

/* Past one JSON value, checking its syntax without recursion. */
static int check_value(const char **cursor) {
    uint64_t objects = 0;  /* bit d: level d is an object */
    int depth = 0;
    const char *p = skip_space(*cursor);
    for (;;) {
        bool closed = false;
        if (*p == '{' || *p == '[') {
            if (depth == JSON_MAX_NESTING) {
                *cursor = p;
                return JSON_DEEP;
            }
            bool object = *p == '{';
            objects = (objects & ~((uint64_t)1 << depth)) | ((uint64_t)object << depth);
            depth++;
            p = skip_space(p + 1);
            if (*p == (object ? '}' : ']')) {
                p++;
                depth--;
                closed = true;
            } else if (object && !check_key(&p)) {
                *cursor = p;
                return JSON_SYNTAX;
            }
            if (!closed) continue;
        } else if (!check_scalar(&p)) {
            *cursor = p;
            return JSON_SYNTAX;
        }
        /* After a value: close containers or move to the next member. */
        for (;;) {
            if (depth == 0) {
                *cursor = p;
                return JSON_OK;
            }
            p = skip_space(p);
            bool object = (objects >> (depth - 1)) & 1u;
            if (*p == ',') {
                p = skip_space(p + 1);
                if (object && !check_key(&p)) {
                    *cursor = p;
                    return JSON_SYNTAX;
                }
                break;
            }
            if (*p == (object ? '}' : ']')) {
                p++;
                depth--;
                continue;
            }
            *cursor = p;
            return JSON_SYNTAX;
        }
    }
}

/* On checked text from here on. */

/* The most objects open at once inside `value`: the nesting of a condition (each AND, OR and
 * NOT is one object; their lists are not levels), found without recursion. */
static int object_depth(const char *value) {
    uint64_t objects = 0;
    int depth = 0, open = 0, most = 0;
    const char *p = value;
    do {
        if (*p == '"') {
            check_string(&p);
            continue;
        }
        if (*p == '{' || *p == '[') {
            bool object = *p == '{';
            objects = (objects & ~((uint64_t)1 << depth)) | ((uint64_t)object << depth);
            depth++;
            if (object && ++open > most) most = open;
        } else if (*p == '}' || *p == ']') {
            depth--;
            if ((objects >> depth) & 1u) open--;
        }
        p++;
    } while (depth > 0);
    return most;
}

static const char *value_end(const char *p) {
    check_value(&p);
    return p;
}

/* The next character of a string (*p inside it), or -1 at its closing quote. */
static int32_t string_next(const char **cursor) {
    const char *p = *cursor;
    if (*p == '"') return -1;
    if (*p != '\\') {
        /* UTF-8: one code point, its value only matters for comparisons. */
        unsigned char c = (unsigned char)*p++;
        int32_t code = c;
        int extra = c >= 0xF0u ? 3 : c >= 0xE0u ? 2 : c >= 0xC0u ? 1 : 0;
        if (extra) code = c & (0x3F >> extra);
        for (; extra > 0 && ((unsigned char)*p & 0xC0u) == 0x80u; extra--) {
            code = (code << 6) | ((unsigned char)*p++ & 0x3F);
        }
        *cursor = p;
        return code;
    }
    p++;
    char escape = *p++;
    int32_t code;
    switch (escape) {
        case 'b': code = '\b'; break;
        case 'f': code = '\f'; break;
        case 'n': code = '\n'; break;
        case 'r': code = '\r'; break;
        case 't': code = '\t'; break;
        case 'u':
            code = 0;
            for (int i = 0; i < 4; i++) code = code * 16 + hex_value(*p++);
            if (code >= 0xD800 && code < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                int32_t low = 0;
                for (int i = 2; i < 6; i++) low = low * 16 + hex_value(p[i]);
                if (low >= 0xDC00 && low < 0xE000) {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
            }
            break;
        default: code = (unsigned char)escape; break;  /* " \ / */
    }
    *cursor = p;
    return code;
}

static int32_t ascii_lower(int32_t c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

/* The string at `key` (its opening quote) equals `literal`. */
static bool string_is(const char *key, const char *literal, bool ignore_case) {
    const char *p = key + 1;
    for (; *literal != '\0'; literal++) {
        int32_t c = string_next(&p);
        if (ignore_case ? ascii_lower(c) != ascii_lower((unsigned char)*literal)
                        : c != (unsigned char)*literal) {
            return false;
        }
    }
    return string_next(&p) == -1;
}

static bool strings_equal(const char *a, const char *b) {
    const char *p = a + 1, *q = b + 1;
    for (;;) {
        int32_t c = string_next(&p), d = string_next(&q);
        if (c != d) return false;
        if (c == -1) return true;
    }
}

/* The next member of an object (*p after '{' or after the previous member's value); false,
 * moving past '}', when there is none. */
static bool member_next(const char **cursor, const char **key, const char **value) {
    const char *p = skip_space(*cursor);
    if (*p == ',') p = skip_space(p + 1);
    if (*p == '}') {
        *cursor = p + 1;
        return false;
    }
    *key = p;
    check_string(&p);
    p = skip_space(skip_space(p) + 1);
    *value = p;
    *cursor = value_end(p);
    return true;
}

static bool element_next(const char **cursor, const char **value) {
    const char *p = skip_space(*cursor);
    if (*p == ',') p = skip_space(p + 1);
    if (*p == ']') {
        *cursor = p + 1;
        return false;
    }
    *value = p;
    *cursor = value_end(p);
    return true;
}

/* Python's str.isspace(), which its regex \s and str.strip() follow. */
static bool is_unicode_space(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* A clause or consequent string split at whitespace, as the server's regex sees it. */
typedef struct {
    char text[CLAUSE_CHARS];      /* the tokens joined by single spaces, for matching and messages */
    uint8_t start[CLAUSE_TOKENS];
    uint8_t length[CLAUSE_TOKENS];
    uint8_t count;                /* tokens, CLAUSE_TOKENS + 1 when there are more */
    bool overflow;                /* longer than `text`: matches nothing */
} clause_t;

static void clause_read(clause_t *clause, const char *string) {
    const char *p = string + 1;
    size_t used = 0;
    bool in_token = false;
    clause->count = 0;
    clause->overflow = false;
    for (int32_t c = string_next(&p); c != -1; c = string_next(&p)) {
        if (is_unicode_space(c)) {
            in_token = false;
            continue;
        }
        if (!in_token) {
            if (clause->count > 0) {
                if (used + 1 >= CLAUSE_CHARS) {
                    clause->overflow = true;
                    break;
                }
                clause->text[used++] = ' ';
            }
            if (clause->count < CLAUSE_TOKENS) {
                clause->start[clause->count] = (uint8_t)used;
                clause->length[clause->count] = 0;
            }
            clause->count++;
            if (clause->count > CLAUSE_TOKENS) clause->count = CLAUSE_TOKENS + 1;
            in_token = true;
        }
        if (used + 1 >= CLAUSE_CHARS) {
            clause->overflow = true;
            break;
        }
        clause->text[used++] = c < 0x80 ? (char)c : '?';  /* no name holds non-ASCII characters */
        if (clause->count <= CLAUSE_TOKENS) clause->length[clause->count - 1]++;
    }
    clause->text[used] = '\0';
}

static bool token_is(const clause_t *clause, int token, const char *word) {
    const char *text = clause->text + clause->start[token];
    size_t length = clause->length[token];
    if (strlen(word) != length) return false;
    for (size_t i = 0; i < length; i++) {
        if (ascii_lower((unsigned char)text[i]) != ascii_lower((unsigned char)word[i])) return false;
    }
    return true;
}

/* "<variable> is <SET>" (3 tokens) or "<variable> is not <SET>" (4 tokens), as the server's
 * regex matches them: the variable is token 0, the set the last token. */
static bool clause_shape(const clause_t *clause, bool *negated) {
    if (clause->overflow) return false;
    if (clause->count == 3 && token_is(clause, 1, "is")) {
        *negated = false;
        return true;
    }
    if (clause->count == 4 && token_is(clause, 1, "is") && token_is(clause, 2, "not")) {
        *negated = true;
        return true;
    }
    return false;
}

static int find_set(const fuzzy_variable_t *variable, const clause_t *clause, int token) {
    for (int i = 0; i < variable->set_count; i++) {
        if (token_is(clause, token, variable->sets[i])) return i;
    }
    return -1;
}

/* A JSON number token (the tokenizer has checked its grammar) as Python's json reads it. */
static double read_number(const char *p) {
    if (starts_with(p, "NaN")) return (double)NAN;
    if (starts_with(p, "Infinity")) return (double)INFINITY;
    if (starts_with(p, "-Infinity")) return -(double)INFINITY;
    double value;
    if (fusion_parse_number(&p, &value)) return value;
    return *p == '-' ? -(double)INFINITY : (double)INFINITY; /* past double's range */
}

#endif /* FUZZY_RULES_JSON */

/* ------------------------------------------------------------------------------------------ */
/* Building the pools                                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    fuzzy_rule_base_t *base;
    const fuzzy_variable_t *inputs;
    size_t input_count;
    const fuzzy_variable_t *output;
    fuzzy_message_t *message;
    /* Registers of conditions parsed but not yet taken by their node or rule are stacked at the
     * top of `operands`, growing down to meet the finished operand lists. */
    int top;
    int rule;  /* 1-based, for messages */
} builder_t;

static int capacity_error(builder_t *b, const char *what, int maximum, const char *name) {
    fuzzy_message_text(b->message, "The rule base needs more than ");
    fuzzy_message_int(b->message, maximum);
    fuzzy_message_text(b->message, what);
    fuzzy_message_text(b->message, " (the device's maximum; raise ");
    fuzzy_message_text(b->message, name);
    fuzzy_message_text(b->message, ")");
    return FUSION_ERR_CAPACITY;
}

static int push(builder_t *b, int reg) {
    if (b->top <= b->base->operand_count) {
        return capacity_error(b, " condition operands", FUZZY_RULES_MAX_OPERANDS, "FUZZY_RULES_MAX_OPERANDS");
    }
    b->base->operands[--b->top] = (uint8_t)reg;
    return FUSION_OK;
}

/* Turns the last `count` pushed registers into one node and pushes its register. */
static int make_node(builder_t *b, uint8_t op, int count) {
    fuzzy_rule_base_t *base = b->base;
    if (count == 1 && op != FUZZY_NODE_NOT) return FUSION_OK;  /* min or max of one value is that value */
    if (base->node_count >= FUZZY_RULES_MAX_NODES) {
        return capacity_error(b, " condition nodes", FUZZY_RULES_MAX_NODES, "FUZZY_RULES_MAX_NODES");
    }
    if (base->operand_count + count > b->top) {
        return capacity_error(b, " condition operands", FUZZY_RULES_MAX_OPERANDS, "FUZZY_RULES_MAX_OPERANDS");
    }
    fuzzy_node_t *node = &base->nodes[base->node_count];
    node->op = op;
    node->count = (uint8_t)count;
    node->first = base->operand_count;
    /* The stack holds the operands last first. */
    for (int i = 0; i < count; i++) {
        base->operands[base->operand_count + i] = base->operands[b->top + count - 1 - i];
    }
    base->operand_count = (uint8_t)(base->operand_count + count);
    b->top += count;
    int reg = base->input_registers + base->node_count++;
    return push(b, reg);
}

static void start(builder_t *b, fuzzy_rule_base_t *base, uint8_t input_registers, fuzzy_message_t *message) {
    memset(base, 0, sizeof *base);
    base->input_registers = input_registers;
    b->base = base;
    b->message = message;
    b->top = FUZZY_RULES_MAX_OPERANDS;
    b->rule = 0;
}

#if FUZZY_RULES_JSON
static void where(builder_t *b) {
    fuzzy_message_text(b->message, "rule ");
    fuzzy_message_int(b->message, b->rule);
}

/* A JSON string as Python's repr shows it (non-ASCII as '?'), cut at 40 characters. */
static void quoted(fuzzy_message_t *message, const char *string) {
    const char *p = string + 1;
    int shown = 0;
    fuzzy_message_text(message, "'");
    for (int32_t c = string_next(&p); c != -1 && shown < 40; c = string_next(&p), shown++) {
        char one = c >= 0x20 && c < 0x7F ? (char)c : '?';
        fuzzy_message_span(message, &one, 1);
    }
    fuzzy_message_text(message, "'");
}

/* The server's _json_kind: what a value is, for messages. */
static void kind(fuzzy_message_t *message, const char *value) {
    switch (*value) {
        case '"':
            fuzzy_message_text(message, "the string ");
            quoted(message, value);
            return;
        case '[': fuzzy_message_text(message, "a list"); return;
        case '{': fuzzy_message_text(message, "an object"); return;
        case 't': fuzzy_message_text(message, "true"); return;
        case 'f': fuzzy_message_text(message, "false"); return;
        case 'n': fuzzy_message_text(message, "null"); return;
        default:
            fuzzy_message_text(message, "the number ");
            fuzzy_message_span(message, value, (size_t)(value_end(value) - value));
            return;
    }
}

static void set_list(fuzzy_message_t *message, const fuzzy_variable_t *variable) {
    for (int i = 0; i < variable->set_count; i++) {
        if (i > 0) fuzzy_message_text(message, ", ");
        fuzzy_message_text(message, variable->sets[i]);
    }
}

static void clause_where(builder_t *b, const char *what, const clause_t *clause) {
    where(b);
    fuzzy_message_text(b->message, what);
    fuzzy_message_text(b->message, clause->text);
    fuzzy_message_text(b->message, "\": ");
}

static int parse_clause(builder_t *b, const char *string) {
    clause_t clause;
    bool negated;
    clause_read(&clause, string);
    if (!clause_shape(&clause, &negated)) {
        clause_where(b, ", clause \"", &clause);
        fuzzy_message_text(b->message, "expected \"<variable> is <SET>\" or \"<variable> is not <SET>\"");
        return FUSION_ERR_PARAMETER;
    }
    const fuzzy_variable_t *variable = NULL;
    for (size_t i = 0; i < b->input_count && variable == NULL; i++) {
        if (token_is(&clause, 0, b->inputs[i].name)) variable = &b->inputs[i];
    }
    if (variable == NULL) {
        clause_where(b, ", clause \"", &clause);
        fuzzy_message_text(b->message, "unknown variable ");
        fuzzy_message_span(b->message, clause.text + clause.start[0], clause.length[0]);
        fuzzy_message_text(b->message, "; variables: ");
        for (size_t i = 0; i < b->input_count; i++) {
            if (i > 0) fuzzy_message_text(b->message, ", ");
            fuzzy_message_text(b->message, b->inputs[i].name);
        }
        return FUSION_ERR_PARAMETER;
    }
    int set_token = clause.count - 1;
    int set = find_set(variable, &clause, set_token);
    if (set < 0) {
        clause_where(b, ", clause \"", &clause);
        fuzzy_message_text(b->message, variable->name);
        fuzzy_message_text(b->message, " has no set ");
        fuzzy_message_span(b->message, clause.text + clause.start[set_token], clause.length[set_token]);
        fuzzy_message_text(b->message, "; sets: ");
        set_list(b->message, variable);
        return FUSION_ERR_PARAMETER;
    }
    int status = push(b, variable->first_register + set);
    if (status == FUSION_OK && negated) status = make_node(b, FUZZY_NODE_NOT, 1);
    return status;
}

/* The operator of a condition object ({"and": [...]}, {"or": [...]}, {"not": ...}; the last of
 * repeated keys counts) and its operand; FUSION_ERR_PARAMETER with the server's message if the
 * value is neither a clause nor such an object. */
static int condition_operator(builder_t *b, const char *value, uint8_t *op, const char **operand) {
    if (*value == '{') {
        const char *p = value + 1, *key, *member, *first_key = NULL;
        int distinct = 0;
        while (member_next(&p, &key, &member)) {
            if (first_key == NULL) {
                first_key = key;
                *operand = member;
                distinct = 1;
            } else if (strings_equal(key, first_key)) {
                *operand = member;  /* a repeated key: the last one counts, as in Python's json */
            } else {
                distinct = 2;
            }
        }
        if (distinct == 1) {
            bool is_and = string_is(first_key, "and", true);
            if (string_is(first_key, "not", true)) {
                *op = FUZZY_NODE_NOT;
                return FUSION_OK;
            }
            if (is_and || string_is(first_key, "or", true)) {
                const char *q = *operand + 1, *element;
                *op = is_and ? FUZZY_NODE_AND : FUZZY_NODE_OR;
                if (**operand == '[' && element_next(&q, &element)) return FUSION_OK;
                where(b);
                fuzzy_message_text(b->message, is_and ? ": \"and\"" : ": \"or\"");
                fuzzy_message_text(b->message, " needs a non-empty list of conditions; got ");
                kind(b->message, *operand);
                return FUSION_ERR_PARAMETER;
            }
            where(b);
            fuzzy_message_text(b->message, ": unknown operator '");
            const char *k = first_key + 1;
            for (int32_t c = string_next(&k); c != -1; c = string_next(&k)) {
                char one = (char)ascii_lower(c < 0x80 ? c : '?');
                fuzzy_message_span(b->message, &one, 1);
            }
            fuzzy_message_text(b->message, "'; use \"and\", \"or\" or \"not\"");
            return FUSION_ERR_PARAMETER;
        }
    }
    where(b);
    fuzzy_message_text(b->message, ": a condition is a clause such as \"light is HIGH\", or {\"and\": [...]}, "
                                   "{\"or\": [...]}, {\"not\": ...} (one key); got ");
    kind(b->message, value);
    return FUSION_ERR_PARAMETER;
}

/* A condition, depth first and left to right as the server's recursive parser goes, with an
 * explicit stack of the operators still open (no recursion: the stack use is fixed). Leaves the
 * condition's register pushed. parse_rule has checked the nesting against the maximum. */
static int parse_condition(builder_t *b, const char *value) {
    struct {
        const char *next;  /* AND / OR: the list position after the operand being parsed */
        uint8_t op, count;
    } open[FUZZY_RULES_MAX_DEPTH];
    int depth = 0;
    for (;;) {
        int status;
        if (*value == '"') {
            status = parse_clause(b, value);
            if (status != FUSION_OK) return status;
        } else {
            const char *operand = NULL;
            uint8_t op = 0;
            status = condition_operator(b, value, &op, &operand);
            if (status != FUSION_OK) return status;
            if (depth == FUZZY_RULES_MAX_DEPTH) {
                where(b);
                fuzzy_message_text(b->message, ": condition nested too deeply");
                return FUSION_ERR_CAPACITY;
            }
            open[depth].op = op;
            open[depth].count = 0;
            if (op == FUZZY_NODE_NOT) {
                value = operand;
            } else {
                open[depth].next = operand + 1;
                element_next(&open[depth].next, &value);
            }
            depth++;
            continue;
        }
        /* A condition is complete: close the operators it completes. */
        for (;;) {
            if (depth == 0) return FUSION_OK;
            int top = depth - 1;
            if (open[top].count == 255) {
                return capacity_error(b, " operands in one AND or OR", 255, "FUZZY_RULES_MAX_OPERANDS");
            }
            open[top].count++;
            if (open[top].op != FUZZY_NODE_NOT && element_next(&open[top].next, &value)) break;
            status = make_node(b, open[top].op, open[top].count);
            if (status != FUSION_OK) return status;
            depth--;
        }
    }
}

static int parse_consequent(builder_t *b, const char *value, uint8_t *set) {
    const fuzzy_variable_t *output = b->output;
    if (*value != '"') {
        where(b);
        fuzzy_message_text(b->message, ": 'then' must be an output set name (");
        set_list(b->message, output);
        fuzzy_message_text(b->message, "); got ");
        kind(b->message, value);
        return FUSION_ERR_PARAMETER;
    }
    clause_t clause;
    bool negated;
    clause_read(&clause, value);
    int token = 0;
    if (clause_shape(&clause, &negated)) {
        if (negated || !token_is(&clause, 0, output->name)) {
            clause_where(b, ", consequent \"", &clause);
            fuzzy_message_text(b->message, "expected \"<SET>\" or \"");
            fuzzy_message_text(b->message, output->name);
            fuzzy_message_text(b->message, " is <SET>\"");
            return FUSION_ERR_PARAMETER;
        }
        token = 2;
    }
    int found = clause.count == 1 || token == 2 ? find_set(output, &clause, token) : -1;
    if (found < 0) {
        clause_where(b, ", consequent \"", &clause);
        fuzzy_message_text(b->message, output->name);
        fuzzy_message_text(b->message, " has no set ");
        fuzzy_message_text(b->message, token == 2 ? clause.text + clause.start[2] : clause.text);
        fuzzy_message_text(b->message, "; sets: ");
        set_list(b->message, output);
        return FUSION_ERR_PARAMETER;
    }
    *set = (uint8_t)found;
    return FUSION_OK;
}

static int parse_rule(builder_t *b, const char *value) {
    fuzzy_rule_base_t *base = b->base;
    if (*value != '{') {
        where(b);
        fuzzy_message_text(b->message, ": expected an object {\"if\": ..., \"then\": ...}; got ");
        kind(b->message, value);
        return FUSION_ERR_PARAMETER;
    }
    const char *p = value + 1, *key, *member, *condition = NULL, *then = NULL, *weight = NULL;
    while (member_next(&p, &key, &member)) {
        if (string_is(key, "if", false)) {
            condition = member;
        } else if (string_is(key, "then", false)) {
            then = member;
        } else if (string_is(key, "weight", false)) {
            weight = member;
        } else {
            where(b);
            fuzzy_message_text(b->message, ": unknown key ");
            quoted(b->message, key);
            fuzzy_message_text(b->message, "; a rule has 'if', 'then' and optionally 'weight'");
            return FUSION_ERR_PARAMETER;
        }
    }
    if (condition == NULL || then == NULL) {
        where(b);
        fuzzy_message_text(b->message, ": needs both 'if' (the condition) and 'then' (an output set: ");
        set_list(b->message, b->output);
        fuzzy_message_text(b->message, ")");
        return FUSION_ERR_PARAMETER;
    }
    /* The server refuses conditions nested deeper than 32; the device's recursion stops sooner,
     * so it tells the two apart before descending. */
    int nesting = object_depth(condition);
    if (nesting > SERVER_MAX_DEPTH || nesting > FUZZY_RULES_MAX_DEPTH) {
        bool server = nesting > SERVER_MAX_DEPTH;
        where(b);
        fuzzy_message_text(b->message, ": condition nested deeper than ");
        fuzzy_message_int(b->message, server ? SERVER_MAX_DEPTH : FUZZY_RULES_MAX_DEPTH);
        fuzzy_message_text(b->message, server ? " levels" : " levels (the device's maximum, FUZZY_RULES_MAX_DEPTH)");
        return server ? FUSION_ERR_PARAMETER : FUSION_ERR_CAPACITY;
    }
    int status = parse_condition(b, condition);
    if (status != FUSION_OK) return status;
    int r = base->rule_count;
    base->condition[r] = base->operands[b->top++];
    status = parse_consequent(b, then, &base->consequent[r]);
    if (status != FUSION_OK) return status;
    double w = 1.0;
    if (weight != NULL) {
        bool number = *weight == '-' || is_digit(*weight) || *weight == 'N' || *weight == 'I';
        w = number ? read_number(weight) : (double)NAN;
        if (!(isfinite(w) && w >= 0.0 && w <= 1.0)) {
            where(b);
            fuzzy_message_text(b->message, ": weight must be a number from 0 to 1; got ");
            if (number) {
                fuzzy_message_span(b->message, weight, (size_t)(value_end(weight) - weight));
            } else {
                kind(b->message, weight);
            }
            return FUSION_ERR_PARAMETER;
        }
    }
    base->weight[r] = (fusion_real_t)w;
    base->rule_count++;
    return FUSION_OK;
}

int fuzzy_rules_parse(fuzzy_rule_base_t *base, const char *text, const fuzzy_variable_t *inputs,
                      size_t input_count, uint8_t input_registers, const fuzzy_variable_t *output,
                      fuzzy_message_t *message) {
    builder_t b;
    start(&b, base, input_registers, message);
    b.inputs = inputs;
    b.input_count = input_count;
    b.output = output;
    if (fusion_text_blank(text)) {
        fuzzy_message_text(message, "The rule base is empty; give a JSON list of rules such as "
                                    "[{\"if\": \"light is HIGH\", \"then\": \"CERTAINLY_OFF\"}]");
        return FUSION_ERR_PARAMETER;
    }
    long characters = 0;  /* code points, as Python's len() */
    for (const char *p = text; *p != '\0'; p++) {
        if (((unsigned char)*p & 0xC0u) != 0x80u) characters++;
    }
    if (characters > SERVER_MAX_TEXT_CHARS) {
        fuzzy_message_text(message, "The rule base is ");
        fuzzy_message_int(message, characters);
        fuzzy_message_text(message, " characters; at most 100000 are accepted");
        return FUSION_ERR_PARAMETER;
    }
    const char *p = text;
    int syntax = check_value(&p);
    if (syntax == JSON_OK) {
        p = skip_space(p);
        if (*p != '\0') syntax = JSON_SYNTAX;
    }
    if (syntax == JSON_DEEP) {
        fuzzy_message_text(message, "The rule base is nested too deeply");
        return FUSION_ERR_PARAMETER;
    }
    if (syntax != JSON_OK) {
        long line = 1, column = 1;
        for (const char *q = text; q < p; q++) {
            if (*q == '\n') {
                line++;
                column = 1;
            } else if (((unsigned char)*q & 0xC0u) != 0x80u) {
                column++;
            }
        }
        fuzzy_message_text(message, "The rule base is not valid JSON at line ");
        fuzzy_message_int(message, line);
        fuzzy_message_text(message, ", column ");
        fuzzy_message_int(message, column);
        return FUSION_ERR_PARAMETER;
    }
    const char *document = skip_space(text);
    if (*document == '{') {
        const char *q = document + 1, *key, *member, *rules = NULL;
        bool only_rules = true;
        while (member_next(&q, &key, &member)) {
            if (string_is(key, "rules", false)) {
                rules = member;
            } else {
                only_rules = false;
            }
        }
        if (only_rules && rules != NULL) document = rules;
    }
    if (*document != '[') {
        fuzzy_message_text(message, "The rule base must be a JSON list of rules, or {\"rules\": [...]}; got ");
        kind(message, document);
        return FUSION_ERR_PARAMETER;
    }
    const char *q = document + 1, *element;
    long count = 0;
    while (element_next(&q, &element)) count++;
    if (count == 0) {
        fuzzy_message_text(message, "The rule base has no rules");
        return FUSION_ERR_PARAMETER;
    }
    if (count > SERVER_MAX_RULES) {
        fuzzy_message_text(message, "The rule base has ");
        fuzzy_message_int(message, count);
        fuzzy_message_text(message, " rules; at most 500 are accepted");
        return FUSION_ERR_PARAMETER;
    }
    if (count > FUZZY_RULES_MAX_RULES) {
        fuzzy_message_text(message, "The rule base has ");
        fuzzy_message_int(message, count);
        fuzzy_message_text(message, " rules; the device holds at most ");
        fuzzy_message_int(message, FUZZY_RULES_MAX_RULES);
        fuzzy_message_text(message, " (raise FUZZY_RULES_MAX_RULES)");
        return FUSION_ERR_CAPACITY;
    }
    q = document + 1;
    while (element_next(&q, &element)) {
        b.rule = base->rule_count + 1;
        int status = parse_rule(&b, element);
        if (status != FUSION_OK) return status;
    }
    return FUSION_OK;
}

#endif /* FUZZY_RULES_JSON */

/* ------------------------------------------------------------------------------------------ */
/* Built-in rule bases                                                                         */
/* ------------------------------------------------------------------------------------------ */

int fuzzy_rules_load(fuzzy_rule_base_t *base, const uint8_t *program, uint8_t input_registers,
                     fuzzy_message_t *message) {
    builder_t b;
    start(&b, base, input_registers, message);
    for (; *program != FUZZY_RULES_END; program++) {
        uint8_t code = *program;
        int status = FUSION_OK;
        if (code < 0x40u) {
            status = push(&b, code);
        } else if (code < 0xC0u) {
            status = make_node(&b, code < 0x80u ? FUZZY_NODE_AND : FUZZY_NODE_OR, code & 0x3F);
        } else if (code == 0xC0u) {
            status = make_node(&b, FUZZY_NODE_NOT, 1);
        } else {  /* 0xE0 + consequent: the rule's condition is complete */
            if (base->rule_count >= FUZZY_RULES_MAX_RULES) {
                return capacity_error(&b, " rules", FUZZY_RULES_MAX_RULES, "FUZZY_RULES_MAX_RULES");
            }
            base->condition[base->rule_count] = base->operands[b.top++];
            base->consequent[base->rule_count] = (uint8_t)(code & 0x1F);
            base->weight[base->rule_count] = FR(1.0);
            base->rule_count++;
        }
        if (status != FUSION_OK) return status;
    }
    return FUSION_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Evaluation                                                                                  */
/* ------------------------------------------------------------------------------------------ */

void fuzzy_rules_evaluate(const fuzzy_rule_base_t *base, fusion_real_t *registers,
                          fusion_real_t *firing) {
    fusion_real_t *out = registers + base->input_registers;
    for (int k = 0; k < base->node_count; k++) {
        const fuzzy_node_t *node = &base->nodes[k];
        const uint8_t *operand = &base->operands[node->first];
        fusion_real_t value = registers[operand[0]];
        if (node->op == FUZZY_NODE_NOT) {
            value = FR(1.0) - value;
        } else if (node->op == FUZZY_NODE_AND) {
            for (int i = 1; i < node->count; i++) {
                fusion_real_t x = registers[operand[i]];
                if (x < value) value = x;
            }
        } else {
            for (int i = 1; i < node->count; i++) {
                fusion_real_t x = registers[operand[i]];
                if (x > value) value = x;
            }
        }
        out[k] = value;
    }
    for (int r = 0; r < base->rule_count; r++) {
        firing[r] = registers[base->condition[r]] * base->weight[r];
    }
}
