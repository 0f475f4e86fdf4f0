/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reference firmware for libmcugw-device on a Cortex-M (QEMU mps2-an386 / mps2-an385): handshake
 * with the gateway over UART0, report STATUS once connected, then one telemetry message every
 * half second with an acknowledgement requested, counting the ACKs; echo cloud commands;
 * receive OTA updates into slot B (slots.c), reboot into them in test mode and confirm them once
 * the new image has a session and an ACKed telemetry message. UART1 is a console for diagnostics:
 * one line per event ("fw: connected", "fw: ack seq=N status=S", "fw: ota ..."), which the
 * integration test and scripts/bench mcu read.
 */
#include <stdint.h>

#include "board.h"
#include "mcugw/device.h"
#include "port.h"
#include "slots.h"

#ifndef FW_VERSION
#define FW_VERSION "1.0.0" /* the Makefile sets it; MCUboot's MAJOR.MINOR.REVISION */
#endif
#define TELEMETRY_PERIOD_MS 500u
#define MAX_FRAME 512u /* announced to the gateway: OTA chunks of 462 bytes */
#define MAX_WIRE MCUGW_WIRE_MAX(MAX_FRAME) /* a largest frame on the wire: 520 bytes */
/* The OTA window: the chunks the gateway may have in flight must fit in the receive ring while
 * the main loop is busy, beside one other frame (an ACK, a command). Under QEMU the UART has no
 * baud rate, so a window larger than the ring loses bytes at once; on a real part it does as
 * soon as a flash write takes longer than the line needs for the excess. */
#define OTA_WINDOW_CHUNKS ((BOARD_RX_RING - MAX_WIRE) / MAX_WIRE)
_Static_assert(OTA_WINDOW_CHUNKS >= 1, "the receive ring must hold a chunk and one more frame");

static uint8_t rx_buf[MCUGW_DEVICE_RX_BUF(MAX_FRAME)];
static uint8_t tx_buf[MCUGW_DEVICE_TX_BUF(256)];
static struct mcugw_device dev;
static struct mcugw_ota ota;
static uint8_t ota_on, self_test, connected_evt;
static uint32_t acks, seq, boot_ms, reboot_at, boot_counter;

static void console_kv(const char *k, uint32_t v)
{
        console_puts(k);
        console_u32(v);
}

static void report_resources(void)
{
        uint32_t peak, cur;

        port_heap_stats(&peak, &cur);
        console_kv("fw: heap_peak=", peak);
        console_kv(" heap_now=", cur);
        console_kv(" stack_peak=", board_stack_used());
        console_kv(" uart_overruns=", link_uart_overruns());
        console_puts("\n");
}

static void on_state(void *user, int state)
{
        (void)user;
        /* The work on a new session is done in the main loop, after the handshake's instruction
         * count is taken. */
        if (state == MCUGW_DEV_CONNECTED)
                connected_evt = 1;
        else if (state == MCUGW_DEV_HANDSHAKE)
                console_puts("fw: handshake\n");
}

static void on_ack(void *user, uint16_t stream, uint32_t s, uint8_t flags, uint8_t status)
{
        (void)user;
        (void)stream;
        (void)flags;
        acks++;
        console_kv("fw: ack seq=", s);
        console_kv(" status=", status);
        console_kv(" acks=", acks);
        console_puts("\n");
        if (self_test && status == 0) {
                /* The self-test of a test boot: a session with the gateway and a stored, ACKed
                 * message. A product adds its own checks (sensors, actuators, watchdog). */
                self_test = 0;
                if (mcugw_ota_self_test_done(&ota, 1, NULL) == 0)
                        console_puts("fw: ota confirmed " FW_VERSION "\n");
                else
                        console_puts("fw: ota confirm failed\n");
        }
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
        console_kv("fw: command id=", id);
        console_puts("\n");
        mcugw_device_send_command_result(&dev, id, 0, payload, len);
}

static void on_message(void *user, const struct mcugw_msg *m)
{
        uint8_t before = ota.state;

        (void)user;
        if (!ota_on || m->type < MCUGW_MSG_OTA_FIRST || m->type > MCUGW_MSG_OTA_LAST)
                return;
        (void)mcugw_ota_handle(&ota, m);
        if (ota.state == before)
                return;
        console_kv("fw: ota state=", ota.state);
        console_kv(" offset=", ota.offset);
        console_kv(" size=", ota.size);
        console_puts("\n");
        report_resources(); /* after the signature check: its stack and heap peaks */
}

static int ota_send(void *ctx, const struct mcugw_msg *m)
{
        (void)ctx;
        return mcugw_device_send(&dev, m);
}

static void on_reboot(void *user, uint32_t transfer_id)
{
        (void)user;
        /* Verified and pending: reboot in a moment (the VERIFIED status is already on the
         * wire: the UART transmits synchronously). */
        slots_pending_transfer(transfer_id);
        console_kv("fw: ota verified, ecdsa_insn=", port_insn()->ecdsa_verify);
        console_puts(", rebooting\n");
        reboot_at = board_ms() + 100u;
        if (!reboot_at)
                reboot_at = 1;
}

static void ota_setup(const struct prov_page *prov)
{
        struct mcugw_ota_config c = { 0 };
        const struct boot_state *b = slots_state();

        if (prov->signer_pub[0] != 0x04) {
                /* No code-signing key provisioned: no OTA (never accept unsigned images). */
                console_puts("fw: no signer key, OTA off\n");
                return;
        }
        slots_flash_port(&c.flash);
        c.send = ota_send;
        c.crypto = dev.cfg.port.crypto;
        c.signer_pub = prov->signer_pub;
        c.max_size = SLOT_B_SIZE;
        c.max_chunk = MAX_FRAME - MCUGW_DATA_OVERHEAD - MCUGW_OTA_CHUNK_HDR;
        c.window = OTA_WINDOW_CHUNKS * c.max_chunk;
        c.on_reboot = on_reboot;
        if (mcugw_ota_init(&ota, &c) != 0) {
                console_puts("fw: OTA init failed\n");
                return;
        }
        ota_on = 1;
        if (slots_running() == 'B' && b->state == BOOT_ST_TESTING) {
                mcugw_ota_booted_test(&ota, b->transfer_id);
                self_test = 1;
        }
}

static void boot_banner(void)
{
        static const char *const names[] = { "none", "pending", "testing", "confirmed",
                                             "reverted" };
        uint32_t st = slots_state()->state;
        char slot[2] = { slots_running(), 0 };

        console_puts("fw: " FW_VERSION " boot slot=");
        console_puts(slot);
        console_puts(" boot_state=");
        console_puts(st < 5 ? names[st] : "?");
        /* CCR.UNALIGN_TRP, read back: the M3 build turns it on in early_init(). */
        console_puts((*(volatile uint32_t *)0xE000ED14u & 8u) ? " unaligned=trap\n" : "\n");
}

static void send_telemetry(uint32_t now)
{
        static uint8_t reported;
        uint8_t payload[8];
        uint32_t up = now - boot_ms;
        uint64_t t0;
        uint32_t insn;
        int i, r;

        seq++;
        for (i = 0; i < 4; i++) {
                payload[i] = (uint8_t)(seq >> (8 * i));
                payload[4 + i] = (uint8_t)(up >> (8 * i));
        }
        t0 = board_ns();
        r = mcugw_device_send_telemetry(&dev, 1, seq, MCUGW_TLM_ACK_REQUESTED, payload,
                                        sizeof payload);
        insn = (uint32_t)(board_ns() - t0);
        if (r == 0) {
                console_kv("fw: telemetry seq=", seq);
                if (!reported) {
                        /* The first one is representative: the same 8 bytes every time. */
                        reported = 1;
                        console_kv(" insn=", insn);
                }
                console_puts("\n");
        }
        if (seq % 5u == 0)
                report_resources();
}

static void on_connected(uint32_t hs_insn)
{
        console_kv("fw: connected insn=", hs_insn);
        console_kv(" x25519_insn=", port_insn()->x25519);
        console_puts("\n");
        mcugw_device_send_status(&dev, boot_counter, (board_ms() - boot_ms) / 1000u, 0, FW_VERSION);
        if (ota_on)
                (void)mcugw_ota_connected(&ota);
        report_resources();
}

int main(void)
{
        struct mcugw_device_config cfg = { 0 };
        const struct prov_page *prov;
        uint32_t next_tlm = 0;
        uint64_t hs_insn, t0;

        board_init();
        boot_ms = board_ms();
        boot_banner();
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
        cfg.cb.on_message = on_message;
        cfg.rx_buf = rx_buf;
        cfg.rx_cap = sizeof rx_buf;
        cfg.tx_buf = tx_buf;
        cfg.tx_cap = sizeof tx_buf;
        /* The power-on count of the provisioning page, and the resets since (an OTA test boot,
         * a confirm): a device's handshake timestamps must grow across both. */
        cfg.boot_counter = boot_counter = (prov->boot_counter << 16) + slots_count_boot();
        if (mcugw_device_init(&dev, &cfg) != 0) {
                console_puts("fw: device init failed, halted\n");
                for (;;)
                        board_idle();
        }
        ota_setup(prov);
        t0 = board_ns();
        if (mcugw_device_start(&dev) != 0) {
                console_puts("fw: device start failed, halted\n");
                for (;;)
                        board_idle();
        }
        /* Instructions spent on the handshake: message 1 here, then the ticks until CONNECTED
         * (idle time between them excluded). */
        hs_insn = board_ns() - t0;
        for (;;) {
                int before = mcugw_device_state(&dev);
                uint32_t now;

                t0 = board_ns();
                mcugw_device_tick(&dev); /* drains the UART ring through port.recv */
                if (before != MCUGW_DEV_CONNECTED ||
                    mcugw_device_state(&dev) != MCUGW_DEV_CONNECTED)
                        hs_insn += board_ns() - t0;
                if (connected_evt) {
                        connected_evt = 0;
                        on_connected((uint32_t)hs_insn);
                        hs_insn = 0;
                }
                now = board_ms();
                if (reboot_at && (int32_t)(now - reboot_at) >= 0) {
                        console_puts("fw: reset\n");
                        board_reset();
                }
                if (mcugw_device_state(&dev) == MCUGW_DEV_CONNECTED &&
                    (int32_t)(now - next_tlm) >= 0) {
                        send_telemetry(now);
                        next_tlm = now + TELEMETRY_PERIOD_MS;
                }
                board_idle(); /* SysTick wakes us every millisecond, UART0 RX at once */
        }
}
