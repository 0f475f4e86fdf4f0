/* SPDX-License-Identifier: Apache-2.0 */
/* The board layer of the reference firmware: QEMU mps2-an386 (Cortex-M4, CMSDK peripherals). */
#ifndef MCUGW_FW_BOARD_H
#define MCUGW_FW_BOARD_H

#include <stddef.h>
#include <stdint.h>

#define BOARD_SYSCLK_HZ 25000000u /* MPS2 FPGA images run the CPU at 25 MHz */

void board_init(void);
/** Milliseconds since reset (SysTick). */
uint32_t board_ms(void);
/**
 * Nanoseconds since reset, from SysTick (40 ns resolution). Under QEMU with -icount shift=0
 * this is the number of instructions executed (plus idle time), see docs/firmware.md.
 */
uint64_t board_ns(void);
/** System reset (AIRCR.SYSRESETREQ). */
void board_reset(void) __attribute__((noreturn));
/** Sleep until the next interrupt. */
void board_idle(void);

/** The link UART (UART0, interrupt-driven receive into a ring of this many bytes; polled
 * transmit). What the firmware announces for flow control (the OTA window) must fit in it. */
#define BOARD_RX_RING 2048u
void link_uart_write(const uint8_t *data, size_t len);
/** Bytes received since the last call, up to @p cap; never blocks. */
size_t link_uart_read(uint8_t *buf, size_t cap);
/** Bytes dropped because the ring was full. */
uint32_t link_uart_overruns(void);

/** The console (UART1), for diagnostics only. */
void console_puts(const char *s);
void console_u32(uint32_t v);

/** Deepest stack use so far in bytes (the stack is painted at reset). */
uint32_t board_stack_used(void);

#endif
