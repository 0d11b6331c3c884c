/* What the toolchain's example startup code expects from a board: SystemInit, run before main.
 * QEMU's mps2-an386 is a Cortex-M4 with the single-precision FPU, which is off at reset. */
#include <stdint.h>

#define CPACR (*(volatile uint32_t *)0xE000ED88u)

void SystemInit(void);

void SystemInit(void) {
    CPACR |= 0xFu << 20; /* full access to coprocessors 10 and 11: the FPU */
    __asm volatile("dsb\n\tisb" ::: "memory");
}
