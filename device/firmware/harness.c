/* The emulator harness: runs windows through one block on QEMU's mps2-an386 (a Cortex-M4F) and
 * writes the features back, so the tests can compare the firmware with the host build.
 *
 * Files through semihosting, in QEMU's working directory (little-endian, written and read by
 * device/host.py):
 *   fusion_input.bin   "FSN1", u32 block (0 fuzzy-off-arm, 1 kalman), f32 sampling frequency,
 *                      u32 input axes, u32 declared axes, i32 column per declared axis, then each
 *                      parameter in the block's X-macro order (string: u32 length + bytes; float:
 *                      f32; int: i32; bool: u8), u32 windows, and per window u32 samples + the
 *                      interleaved f32 values.
 *   fusion_output.bin  i32 init code, u32 message length + message, then per window: i32 code,
 *                      message as above, u32 feature count + f32 features, u32 timer ticks,
 *                      u32 stack bytes the call used (painted stack, 0 on the host).
 * Built for the host with -DHARNESS_HOST (no timer) and linked with the Edge Impulse engine, the
 * same harness runs the windows through the Studio adapters instead of the block API.
 * The ticks are the CMSDK timer's (25 MHz in QEMU's model) across the process call; under
 * `-icount shift=0` QEMU runs one instruction per virtual nanosecond, so 40 instructions a tick.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzzy_off_arm.h"
#include "harness_engine.h"
#include "kalman.h"

#define MAX_WINDOW_VALUES (256u * 1024u)
#define STRING_POOL_BYTES (64u * 1024u)

/* CMSDK APB timer 0 of the MPS2 FPGA images: a 32-bit down counter. */
#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)

static float window_values[MAX_WINDOW_VALUES];
static char string_pool[STRING_POOL_BYTES];
static size_t string_pool_used;
static float features[512];
static FILE *input;
static FILE *output;
static bool input_ok = true;

static uint32_t read_u32(void) {
    uint32_t value = 0;
    if (fread(&value, sizeof value, 1, input) != 1) input_ok = false;
    return value;
}

static void read_float(float *out) {
    if (fread(out, sizeof *out, 1, input) != 1) input_ok = false;
}

static void read_int(int *out) {
    int32_t value = 0;
    if (fread(&value, sizeof value, 1, input) != 1) input_ok = false;
    *out = (int)value;
}

static void read_bool(bool *out) {
    uint8_t value = 0;
    if (fread(&value, 1, 1, input) != 1) input_ok = false;
    *out = value != 0;
}

static void read_string(const char **out) {
    uint32_t length = read_u32();
    if (!input_ok || length + 1 > STRING_POOL_BYTES - string_pool_used) {
        input_ok = false;
        *out = "";
        return;
    }
    char *text = string_pool + string_pool_used;
    if (fread(text, 1, length, input) != length) input_ok = false;
    text[length] = '\0';
    string_pool_used += length + 1;
    *out = text;
}

/* Reads one parameter by the type of its field, so the X-macro lists drive the whole format. */
#define READ_PARAMETER(field) \
    _Generic((field), const char **: read_string, float *: read_float, int *: read_int, bool *: read_bool)(field)
#define READ_FUZZY_FIELD(type, name) READ_PARAMETER(&fuzzy_params.name);
#define READ_KALMAN_FIELD(type, name) READ_PARAMETER(&kalman_params.name);

static void write_u32(uint32_t value) { fwrite(&value, sizeof value, 1, output); }

static void write_status(int code, const char *message) {
    int32_t value = code;
    fwrite(&value, sizeof value, 1, output);
    uint32_t length = (uint32_t)strlen(message);
    write_u32(length);
    fwrite(message, 1, length, output);
}

#ifdef HARNESS_HOST
static uint32_t host_stack_word[64];
static uint32_t *current_stack_pointer(void) { return host_stack_word + 64; }
static uint32_t timer_now(void) { return 0; }
static void timer_start(void) {}
static void paint_stack(uint32_t *top) { (void)top; }
static uint32_t stack_used(uint32_t *top) { (void)top; return 0; }
#else
/* The words from PAINT_BYTES below `top` (just under the stack pointer) up to `top` are painted
 * before a call and scanned after it: the deepest word the call changed is how much stack it
 * used, libm and the window reader included. (Newlib's semihosting start-up places the stack
 * where QEMU says, so the region is taken from the stack pointer, not the linker script.) */
#define STACK_PAINT 0xC0FFEE11u
#define PAINT_BYTES (48u * 1024u)

static inline __attribute__((always_inline)) uint32_t *current_stack_pointer(void) {
    uint32_t *sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static void paint_stack(uint32_t *top) {
    for (uint32_t *word = top - PAINT_BYTES / 4u; word < top; word++) *word = STACK_PAINT;
}

static uint32_t stack_used(uint32_t *top) {
    uint32_t *word = top - PAINT_BYTES / 4u;
    while (word < top && *word == STACK_PAINT) word++;
    return (uint32_t)((char *)top - (char *)word);
}

static uint32_t timer_now(void) { return TIMER0_VALUE; }
static void timer_start(void) {
    TIMER0_RELOAD = 0xFFFFFFFFu;
    TIMER0_VALUE = 0xFFFFFFFFu;
    TIMER0_CTRL = 1u;
}
#endif

int main(void) {
    input = fopen("fusion_input.bin", "rb");
    output = fopen("fusion_output.bin", "wb");
    if (input == NULL || output == NULL) {
        printf("harness: cannot open fusion_input.bin or fusion_output.bin\n");
        return 1;
    }
    timer_start();

    uint32_t magic = read_u32();
    uint32_t block = read_u32();
    float sampling_freq = 0.0f;
    read_float(&sampling_freq);
    uint32_t input_axes = read_u32();
    uint32_t declared = read_u32();
    int columns[16];
    for (uint32_t i = 0; i < declared && i < 16; i++) read_int(&columns[i]);
    if (magic != 0x314E5346u || declared > 16 || block > 1) input_ok = false;

    static fuzzy_off_arm_params_t fuzzy_params;
    static kalman_params_t kalman_params;
    const void *params;
    if (block == 0) {
        FUZZY_OFF_ARM_PARAMETERS(READ_FUZZY_FIELD)
        params = &fuzzy_params;
    } else {
        KALMAN_PARAMETERS(READ_KALMAN_FIELD)
        params = &kalman_params;
    }
    int code = -100;
    const char *message = "harness: malformed fusion_input.bin";
    if (input_ok) {
        code = engine_init((int)block, params, sampling_freq, columns, input_axes);
        message = engine_message((int)block);
    }
    write_status(code, code == 0 ? "" : message);
    if (code != 0) {
        fclose(output);
        return 0;
    }

    uint32_t windows = read_u32();
    for (uint32_t w = 0; w < windows && input_ok; w++) {
        uint32_t samples = read_u32();
        if ((uint64_t)samples * input_axes > MAX_WINDOW_VALUES) {
            write_status(-100, "harness: window larger than MAX_WINDOW_VALUES");
            break;
        }
        size_t values = (size_t)samples * input_axes;
        if (fread(window_values, sizeof(float), values, input) != values) {
            input_ok = false;
            break;
        }
        fusion_window_t window = {fusion_read_memory, window_values, samples, input_axes};
        size_t count = 0;
        /* 256 bytes below the stack pointer: everything main keeps is above it, and paint_stack's
         * own frame fits in the gap, which is never painted. */
        uint32_t *top = current_stack_pointer() - 64;
        paint_stack(top);
        uint32_t start = timer_now();
        code = engine_process((int)block, &window, features, sizeof features / sizeof features[0], &count);
        uint32_t ticks = start - timer_now();
        uint32_t stack = stack_used(top);
        message = engine_message((int)block);
        write_status(code, code == 0 ? "" : message);
        if (code != 0) count = 0;
        write_u32((uint32_t)count);
        fwrite(features, sizeof(float), count, output);
        write_u32(ticks);
        write_u32(stack == 0 ? 0 : stack + 256u);
    }
    fclose(output);
    fclose(input);
    return input_ok ? 0 : 1;
}
