/* SPDX-License-Identifier: Apache-2.0 */
/* Vector table and reset handler for QEMU mps2-an386 (Cortex-M4) and mps2-an385 (Cortex-M3). */
#include <stdint.h>

#include "board.h"
#include "slots.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);
void reset_handler(void);
void default_handler(void);
void fault_handler(void);
void early_init(void);
void systick_handler(void);
void uart0_rx_handler(void);

#define STACK_PAINT 0xA5A5A5A5u
#define REG(a) (*(volatile uint32_t *)(a))

void default_handler(void)
{
        for (;;)
                ;
}

/* A fault (an unaligned access with the trap on, a bad pointer) says so on the console with
 * the faulting PC and stops: the integration test reads "fw: fault". */
void fault_report(const uint32_t *frame);
void fault_report(const uint32_t *frame)
{
        console_puts("fw: fault cfsr=");
        console_u32(REG(0xE000ED28u));
        console_puts(" hfsr=");
        console_u32(REG(0xE000ED2Cu));
        console_puts(" pc=");
        console_u32(frame[6]);
        console_puts(" lr=");
        console_u32(frame[5]);
        console_puts("\n");
        for (;;)
                __asm__ volatile("wfi");
}

__attribute__((naked)) void fault_handler(void)
{
        /* The exception frame (r0-r3, r12, lr, pc, xpsr) is on the stack that was in use. */
        __asm__ volatile("tst lr, #4\n"
                         "ite eq\n"
                         "mrseq r0, msp\n"
                         "mrsne r0, psp\n"
                         "b fault_report\n");
}

void early_init(void)
{
#ifdef FW_ALIGN_TRAP
        /* CCR.UNALIGN_TRP: every unaligned load/store faults, as it does on a Cortex-M0/M0+
         * and on parts or memories without unaligned support. Built with -mno-unaligned-access
         * the compiler never emits one; the SDK must not either (its byte-wise codecs). */
        REG(0xE000ED14u) |= 1u << 3;
#endif
        boot_step(); /* does not return when it boots slot B */
}

/* 16 system exceptions and 32 external interrupts; UART0 RX is IRQ 0 on the AN385/AN386. */
__attribute__((section(".vectors"), used)) static void (*const vectors[16 + 32])(void) = {
        [0] = (void (*)(void)) & _estack,
        [1] = reset_handler,
        [2] = default_handler,  /* NMI */
        [3] = fault_handler,    /* HardFault */
        [4] = fault_handler,    /* MemManage */
        [5] = fault_handler,    /* BusFault */
        [6] = fault_handler,    /* UsageFault */
        [11] = default_handler, /* SVCall */
        [14] = default_handler, /* PendSV */
        [15] = systick_handler,
        [16 + 0] = uart0_rx_handler,
};

__attribute__((naked, noreturn)) void reset_handler(void)
{
        /* Paint the stack up to 64 bytes below the initial stack pointer (board_stack_used()
         * reads the high-water mark back), copy .data, clear .bss, run the boot step (slots.c),
         * call main(). In assembly:
         * nothing here may rely on initialised data or use the stack being painted. */
        __asm__ volatile("ldr r0, =_sstack\n"
                         "mov r1, sp\n"
                         "sub r1, r1, #64\n"
                         "ldr r2, =0xA5A5A5A5\n"
                         "1: cmp r0, r1\n"
                         "bhs 2f\n"
                         "str r2, [r0], #4\n"
                         "b 1b\n"
                         "2: ldr r0, =_sdata\n"
                         "ldr r1, =_edata\n"
                         "ldr r2, =_sidata\n"
                         "3: cmp r0, r1\n"
                         "bhs 4f\n"
                         "ldr r3, [r2], #4\n"
                         "str r3, [r0], #4\n"
                         "b 3b\n"
                         "4: ldr r0, =_sbss\n"
                         "ldr r1, =_ebss\n"
                         "mov r2, #0\n"
                         "5: cmp r0, r1\n"
                         "bhs 6f\n"
                         "str r2, [r0], #4\n"
                         "b 5b\n"
                         "6: bl early_init\n"
                         "bl main\n"
                         "7: b 7b\n");
}

uint32_t board_stack_used_from(const uint32_t *lo, const uint32_t *hi);
uint32_t board_stack_used_from(const uint32_t *lo, const uint32_t *hi)
{
        const uint32_t *p = lo;

        while (p < hi && *p == STACK_PAINT)
                p++;
        return (uint32_t)((hi - p) * 4);
}

uint32_t board_stack_used(void)
{
        return board_stack_used_from(&_sstack, &_estack);
}
