/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reference firmware for libmcugw-device on a Cortex-M4 (QEMU mps2-an386): handshake with the
 * gateway over UART0, report STATUS once connected, then one telemetry message per second with
 * an acknowledgement requested, counting the ACKs. UART1 is a console for diagnostics: one line
 * per event ("fw: connected", "fw: ack seq=N status=S", ...), which the integration test reads.
 */
#include <stdint.h>

#include "board.h"
#include "mcugw/device.h"
#include "port.h"

#define FW_VERSION "fw-example-1.0.0"
#define TELEMETRY_PERIOD_MS 1000u

/* Frames up to 160 bytes both ways: telemetry up to ~120 bytes of payload. */
static uint8_t rx_buf[MCUGW_DEVICE_RX_BUF(160)];
static uint8_t tx_buf[MCUGW_DEVICE_TX_BUF(160)];
static struct mcugw_device dev;
static uint32_t acks, seq, boot_ms, boot_counter;

static void report_resources(void)
{
        uint32_t peak, cur;

        port_heap_stats(&peak, &cur);
        console_puts("fw: heap_peak=");
        console_u32(peak);
        console_puts(" heap_now=");
        console_u32(cur);
        console_puts(" stack_peak=");
        console_u32(board_stack_used());
        console_puts("\n");
}

static void on_state(void *user, int state)
{
        (void)user;
        if (state == MCUGW_DEV_CONNECTED) {
                console_puts("fw: connected\n");
                mcugw_device_send_status(&dev, boot_counter, (board_ms() - boot_ms) / 1000u, 0,
                                         FW_VERSION);
                report_resources();
        } else if (state == MCUGW_DEV_HANDSHAKE) {
                console_puts("fw: handshake\n");
        }
}

static void on_ack(void *user, uint16_t stream, uint32_t s, uint8_t flags, uint8_t status)
{
        (void)user;
        (void)stream;
        (void)flags;
        acks++;
        console_puts("fw: ack seq=");
        console_u32(s);
        console_puts(" status=");
        console_u32(status);
        console_puts(" acks=");
        console_u32(acks);
        console_puts("\n");
}

static void on_error(void *user, int code, const char *text, size_t len)
{
        (void)user;
        (void)text;
        (void)len;
        console_puts("fw: error ");
        if (code < 0) {
                console_puts("-");
                console_u32((uint32_t)-code);
        } else {
                console_u32((uint32_t)code);
        }
        console_puts("\n");
}

static void on_command(void *user, uint32_t id, const uint8_t *payload, size_t len)
{
        (void)user;
        /* Echo: a real product acts on the command here. */
        mcugw_device_send_command_result(&dev, id, 0, payload, len);
}

int main(void)
{
        struct mcugw_device_config cfg = { 0 };
        const struct prov_page *prov;
        uint32_t next_tlm = 0;

        board_init();
        boot_ms = board_ms();
        console_puts("fw: " FW_VERSION " boot\n");
        prov = port_prov();
        if (!prov) {
                console_puts("fw: provisioning page blank or invalid, halted\n");
                for (;;)
                        board_idle();
        }
        console_puts("fw: device id ");
        console_puts(prov->device_id);
        console_puts("\n");
        port_init(&cfg.port, &cfg.keys, prov);
        cfg.cb.on_state = on_state;
        cfg.cb.on_ack = on_ack;
        cfg.cb.on_error = on_error;
        cfg.cb.on_command = on_command;
        cfg.rx_buf = rx_buf;
        cfg.rx_cap = sizeof rx_buf;
        cfg.tx_buf = tx_buf;
        cfg.tx_cap = sizeof tx_buf;
        cfg.boot_counter = boot_counter = prov->boot_counter;
        if (mcugw_device_init(&dev, &cfg) != 0 || mcugw_device_start(&dev) != 0) {
                console_puts("fw: device init failed, halted\n");
                for (;;)
                        board_idle();
        }
        for (;;) {
                uint32_t now;

                mcugw_device_tick(&dev); /* drains the UART ring through port.recv */
                now = board_ms();
                if (mcugw_device_state(&dev) == MCUGW_DEV_CONNECTED &&
                    (int32_t)(now - next_tlm) >= 0) {
                        uint8_t payload[8];
                        uint32_t up = now - boot_ms;
                        int i;

                        seq++;
                        for (i = 0; i < 4; i++) {
                                payload[i] = (uint8_t)(seq >> (8 * i));
                                payload[4 + i] = (uint8_t)(up >> (8 * i));
                        }
                        if (mcugw_device_send_telemetry(&dev, 1, seq, MCUGW_TLM_ACK_REQUESTED,
                                                        payload, sizeof payload) == 0) {
                                console_puts("fw: telemetry seq=");
                                console_u32(seq);
                                console_puts("\n");
                        }
                        if (seq % 5u == 0)
                                report_resources();
                        next_tlm = now + TELEMETRY_PERIOD_MS;
                }
                board_idle(); /* SysTick wakes us every millisecond, UART0 RX at once */
        }
}
