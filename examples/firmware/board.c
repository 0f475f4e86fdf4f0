/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Board support for QEMU mps2-an386: SysTick millisecond clock, CMSDK APB UART0 as the link
 * (receive interrupt into a ring buffer, polled transmit) and UART1 as a diagnostic console.
 * On a real part this file is what changes: clock tree, pins, the vendor's UART.
 */
#include "board.h"

#define REG(a) (*(volatile uint32_t *)(a))

/* CMSDK APB UART (ARM DDI 0479). */
#define UART0 0x40004000u
#define UART1 0x40005000u
#define UART_DATA 0x00u
#define UART_STATE 0x04u     /* bit 0 TX full, bit 1 RX full */
#define UART_CTRL 0x08u      /* bit 0 TX enable, bit 1 RX enable, bit 3 RX interrupt enable */
#define UART_INTSTATUS 0x0Cu /* write 1 to clear; bit 1 RX */
#define UART_BAUDDIV 0x10u

/* Cortex-M SysTick and NVIC. */
#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define NVIC_ISER0 0xE000E100u
#define UART0_RX_IRQ 0

void systick_handler(void);
void uart0_rx_handler(void);

static volatile uint32_t ticks;

/* Receive ring: single producer (the ISR), single consumer (the main loop). It holds what
 * the gateway may send while the main loop is busy (a handshake computation, a flash write, the
 * image check): the OTA window main.c derives from it, and one more frame of any kind. */
#define RING BOARD_RX_RING
static uint8_t ring[RING];
static volatile uint32_t ring_head, ring_tail, overruns;

void systick_handler(void)
{
        ticks++;
}

void uart0_rx_handler(void)
{
        /* Clear the interrupt first, then drain: a byte that arrives after the last read sets
         * it again. (Clearing after draining loses that byte's interrupt, and the UART, its
         * one-byte buffer full, stops receiving for good.) */
        REG(UART0 + UART_INTSTATUS) = 2u;
        while (REG(UART0 + UART_STATE) & 2u) {
                uint8_t b = (uint8_t)REG(UART0 + UART_DATA);
                uint32_t h = ring_head;

                if (h - ring_tail < RING) {
                        ring[h % RING] = b;
                        ring_head = h + 1;
                } else {
                        overruns++;
                }
        }
}

static void uart_init(uint32_t base, int rx_irq)
{
        REG(base + UART_BAUDDIV) = BOARD_SYSCLK_HZ / 115200u;
        REG(base + UART_CTRL) = 1u | 2u | (rx_irq ? 8u : 0u);
}

void board_init(void)
{
        uart_init(UART0, 1);
        uart_init(UART1, 0);
        REG(NVIC_ISER0) = 1u << UART0_RX_IRQ;
        REG(SYST_RVR) = BOARD_SYSCLK_HZ / 1000u - 1u;
        REG(SYST_CVR) = 0;
        REG(SYST_CSR) = 7u; /* processor clock, interrupt, enable */
}

uint32_t board_ms(void)
{
        return ticks;
}

uint64_t board_ns(void)
{
        uint32_t t, cvr;

        /* SysTick counts down from RVR at the 25 MHz processor clock: 40 ns a count. Read the
         * millisecond count again if it moved while the counter was read. */
        do {
                t = ticks;
                cvr = REG(SYST_CVR);
        } while (t != ticks);
        return (uint64_t)t * 1000000u + (uint64_t)(BOARD_SYSCLK_HZ / 1000u - 1u - cvr) * 40u;
}

void board_reset(void)
{
        /* AIRCR: VECTKEY | SYSRESETREQ. QEMU resets the machine: the images it loaded (-kernel,
         * -device loader) are written again, the rest of the memory keeps its contents. */
        __asm__ volatile("dsb");
        REG(0xE000ED0Cu) = 0x05FA0004u;
        __asm__ volatile("dsb");
        for (;;)
                ;
}

void board_idle(void)
{
        __asm__ volatile("wfi");
}

static void uart_putc(uint32_t base, uint8_t c)
{
        while (REG(base + UART_STATE) & 1u)
                ;
        REG(base + UART_DATA) = c;
}

void link_uart_write(const uint8_t *data, size_t len)
{
        size_t i;

        for (i = 0; i < len; i++)
                uart_putc(UART0, data[i]);
}

size_t link_uart_read(uint8_t *buf, size_t cap)
{
        size_t n = 0;
        uint32_t t = ring_tail;

        while (n < cap && t != ring_head)
                buf[n++] = ring[t++ % RING];
        ring_tail = t;
        return n;
}

uint32_t link_uart_overruns(void)
{
        return overruns;
}

void console_puts(const char *s)
{
        while (*s)
                uart_putc(UART1, (uint8_t)*s++);
}

void console_u32(uint32_t v)
{
        char b[11];
        int i = 10;

        b[i] = 0;
        do {
                b[--i] = (char)('0' + v % 10u);
                v /= 10u;
        } while (v);
        console_puts(b + i);
}
