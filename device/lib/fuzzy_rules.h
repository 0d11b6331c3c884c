/* Fuzzy rule bases for the device: the server's rule-base JSON (`dsp/fusion/fuzzy_logic.py`,
 * `parse_rule_base`) parsed once at init into fixed-size pools, and evaluated per sample.
 *
 * A rule base is a small register machine. Registers 0 .. input_registers-1 hold the membership
 * degrees of the input sets; each condition node (AND = min, OR = max, NOT = 1 - x) writes one
 * more register, and nodes are stored children first, so one forward pass evaluates them all.
 * Each rule's firing strength is its condition's register times its weight.
 *
 * The parser accepts exactly what the server accepts (a list of rules or {"rules": [...]};
 * {"if": condition, "then": "<SET>" | "<output> is <SET>", "weight": 0..1}; clauses
 * "<variable> is [not] <SET>", case-insensitive; {"and": [...]}, {"or": [...]}, {"not": ...};
 * duplicate JSON keys: the last one wins, as in Python's json) and refuses what it refuses, with
 * the server's messages. Device limits beyond the server's: the pools below (FUSION_ERR_CAPACITY)
 * and JSON nested deeper than 64 levels anywhere in the text (the server allows ~1000).
 *
 * No heap, no stdio; the text is read in place (UTF-8, NUL-terminated).
 */
#ifndef FUZZY_RULES_H
#define FUZZY_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusion_window.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1: custom rule bases from JSON text (fuzzy_rules_parse). 0 leaves the parser out (about
 * 5 KB of flash); a block then refuses custom rule bases with FUSION_ERR_UNSUPPORTED. */
#ifndef FUZZY_RULES_JSON
#define FUZZY_RULES_JSON 1
#endif

/* Rules in one rule base (the article's has 9; the server allows 500). */
#ifndef FUZZY_RULES_MAX_RULES
#define FUZZY_RULES_MAX_RULES 16
#endif
/* AND / OR / NOT nodes over all rules (the article's rules need 9; an AND or OR of one operand
 * needs none). */
#ifndef FUZZY_RULES_MAX_NODES
#define FUZZY_RULES_MAX_NODES 32
#endif
/* Operand slots: the operands of every node, plus, while parsing, those of the nodes still
 * open (the article's rules need 26). */
#ifndef FUZZY_RULES_MAX_OPERANDS
#define FUZZY_RULES_MAX_OPERANDS 64
#endif
/* Deepest condition nesting accepted (the server's limit is 32). Each level costs 8 bytes of
 * stack in the parser at init. */
#ifndef FUZZY_RULES_MAX_DEPTH
#define FUZZY_RULES_MAX_DEPTH 16
#endif

/* Input registers (membership degrees) the pools leave room for. */
#define FUZZY_RULES_MAX_INPUT_REGISTERS 16
#define FUZZY_RULES_MAX_REGISTERS (FUZZY_RULES_MAX_INPUT_REGISTERS + FUZZY_RULES_MAX_NODES)

#if FUZZY_RULES_MAX_REGISTERS > 255 || FUZZY_RULES_MAX_OPERANDS > 255 || FUZZY_RULES_MAX_RULES > 255
#error "fuzzy_rules: register, operand and rule indices are stored in 8 bits"
#endif
#if FUZZY_RULES_MAX_DEPTH > 32
#error "FUZZY_RULES_MAX_DEPTH: the server accepts at most 32 levels"
#endif

enum { FUZZY_NODE_AND = 0, FUZZY_NODE_OR = 1, FUZZY_NODE_NOT = 2 };

/* A variable as the parser sees it: its name (lower case) and its sets' names (the server's
 * spelling; matched case-insensitively); input variables' sets occupy the registers
 * first_register .. first_register + set_count - 1. */
typedef struct {
    const char *name;
    const char *const *sets;
    uint8_t set_count;
    uint8_t first_register;
} fuzzy_variable_t;

typedef struct {
    uint8_t op;     /* FUZZY_NODE_* */
    uint8_t count;  /* operands */
    uint8_t first;  /* first operand in `operands` */
} fuzzy_node_t;

typedef struct {
    uint8_t input_registers;
    uint8_t rule_count;
    uint8_t node_count;
    uint8_t operand_count;
    uint8_t operands[FUZZY_RULES_MAX_OPERANDS];   /* register numbers */
    fuzzy_node_t nodes[FUZZY_RULES_MAX_NODES];   /* children before parents */
    uint8_t condition[FUZZY_RULES_MAX_RULES];     /* register of each rule's condition */
    uint8_t consequent[FUZZY_RULES_MAX_RULES];    /* output set of each rule */
    fusion_real_t weight[FUZZY_RULES_MAX_RULES];
} fuzzy_rule_base_t;

/* A message under construction in a caller's buffer (always NUL-terminated, cut at capacity). */
typedef struct {
    char *text;
    size_t capacity;
    size_t length;
} fuzzy_message_t;

void fuzzy_message_start(fuzzy_message_t *message, char *buffer, size_t capacity);
void fuzzy_message_text(fuzzy_message_t *message, const char *text);
void fuzzy_message_span(fuzzy_message_t *message, const char *text, size_t length);
void fuzzy_message_int(fuzzy_message_t *message, long value);
/* As Python's f"{value:g}" (6 significant digits). */
void fuzzy_message_number(fuzzy_message_t *message, double value);

/* Parses rule-base JSON `text` against the variables into `base` (FUZZY_RULES_JSON builds only). Returns FUSION_OK,
 * FUSION_ERR_PARAMETER (the server refuses the text too) or FUSION_ERR_CAPACITY (a pool above is
 * too small), with the reason in `message`. */
int fuzzy_rules_parse(fuzzy_rule_base_t *base, const char *text, const fuzzy_variable_t *inputs,
                      size_t input_count, uint8_t input_registers, const fuzzy_variable_t *output,
                      fuzzy_message_t *message);

/* Loads a built-in rule base from its compact form: per rule its condition in postfix form (a
 * register number < 0x40; FUZZY_RULES_AND(n) / FUZZY_RULES_OR(n): AND / OR of the last n
 * conditions; FUZZY_RULES_NOT: NOT of the last), then FUZZY_RULES_THEN(consequent set); the list
 * ends with FUZZY_RULES_END. */
#define FUZZY_RULES_AND(n) (0x40 + (n))
#define FUZZY_RULES_OR(n) (0x80 + (n))
#define FUZZY_RULES_NOT 0xC0
#define FUZZY_RULES_THEN(set) (0xE0 + (set))
#define FUZZY_RULES_END 0xFF
int fuzzy_rules_load(fuzzy_rule_base_t *base, const uint8_t *program, uint8_t input_registers,
                     fuzzy_message_t *message);

/* Firing strength of every rule. `registers` holds the input_registers membership degrees
 * and has room for node_count more (FUZZY_RULES_MAX_REGISTERS is always enough). */
void fuzzy_rules_evaluate(const fuzzy_rule_base_t *base, fusion_real_t *registers,
                          fusion_real_t *firing);

#ifdef __cplusplus
}
#endif

#endif
