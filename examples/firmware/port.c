/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Port glue between libmcugw-device and this board: link send/receive over the UART, the
 * SysTick millisecond clock, the PSA crypto table (src/device/port/psa_mbedtls.c) on mbedTLS
 * with a static heap, the keys from the provisioning page, and the entropy source.
 *
 * !!! ENTROPY WARNING !!!
 * QEMU's mps2-an386 has no random number generator. mbedtls_hardware_poll() below is therefore
 * a DETERMINISTIC generator (SHA-256 over a seed from the provisioning page, a counter and the
 * uptime): every boot with the same page draws the same handshake keys. That is acceptable for
 * an emulator test and NOTHING ELSE. On a real part mbedtls_hardware_poll() must read the
 * MCU's hardware TRNG (e.g. STM32 RNG, nRF RNG, the TRNG of an NXP/Microchip part); everything
 * else here stays as it is.
 */
#include <string.h>

#include "mbedtls/memory_buffer_alloc.h"
#include "mbedtls/sha256.h"

#include "board.h"
#include "port.h"
#include "psa_mbedtls.h"

int mbedtls_hardware_poll(void *data, unsigned char *output, size_t len, size_t *olen);

extern const uint8_t _prov[];

/* mbedTLS heap: PSA keeps key material and bignum temporaries here. 1.7 KiB are used at peak by
 * a handshake (measured, docs/firmware.md); 6 KiB leaves margin. */
static unsigned char heap[6 * 1024];

static const struct prov_page *prov_page;

const struct prov_page *port_prov(void)
{
        const struct prov_page *p = (const struct prov_page *)(const void *)_prov;
        const char *nul;

        if (p->magic != PROV_MAGIC || p->version != PROV_VERSION)
                return NULL;
        nul = memchr(p->device_id, 0, sizeof p->device_id);
        if (!nul || nul == p->device_id || nul - p->device_id > 32)
                return NULL;
        return p;
}

int mbedtls_hardware_poll(void *data, unsigned char *output, size_t len, size_t *olen)
{
        /* EMULATOR ONLY, see the warning at the top: replace with the hardware TRNG. */
        static uint32_t counter;
        uint8_t block[32];
        size_t done = 0;

        (void)data;
        while (done < len) {
                mbedtls_sha256_context c;
                uint32_t t = board_ms();
                size_t k = len - done < 32 ? len - done : 32;

                counter++;
                mbedtls_sha256_init(&c);
                if (mbedtls_sha256_starts_ret(&c, 0) != 0 ||
                    mbedtls_sha256_update_ret(&c, prov_page->rng_seed, 32) != 0 ||
                    mbedtls_sha256_update_ret(&c, (const uint8_t *)&counter, 4) != 0 ||
                    mbedtls_sha256_update_ret(&c, (const uint8_t *)&t, 4) != 0 ||
                    mbedtls_sha256_finish_ret(&c, block) != 0) {
                        mbedtls_sha256_free(&c);
                        return -1;
                }
                mbedtls_sha256_free(&c);
                memcpy(output + done, block, k);
                done += k;
        }
        *olen = len;
        return 0;
}

static int link_send(void *ctx, const uint8_t *data, size_t len)
{
        (void)ctx;
        link_uart_write(data, len);
        return 0;
}

static int link_recv(void *ctx, uint8_t *buf, size_t cap)
{
        (void)ctx;
        return (int)link_uart_read(buf, cap);
}

static uint32_t now_ms(void *ctx)
{
        (void)ctx;
        return board_ms();
}

/*
 * The PSA crypto table with X25519 and the ECDSA verify timed, for scripts/bench mcu. Under
 * `-icount shift=0` QEMU runs one instruction per virtual nanosecond, so the virtual time an
 * operation takes is its instruction count (not cycles of any real part). On a product, use
 * &mcugw_crypto_psa directly.
 */
static struct port_insn insn;
static struct mcugw_crypto timed_crypto;
/* The device's static public key, computed once at boot (a product would store it next to the
 * private key at provisioning): the SDK then skips one X25519 in every handshake. */
static uint8_t device_pub[32];

static int timed_x25519(void *ctx, uint8_t shared[32], const uint8_t priv[32],
                        const uint8_t peer[32])
{
        uint64_t t0 = board_ns();
        int r = mcugw_crypto_psa.x25519(ctx, shared, priv, peer);

        insn.x25519 = (uint32_t)(board_ns() - t0);
        insn.x25519_n++;
        return r;
}

static int timed_ecdsa(void *ctx, const uint8_t pub[65], const uint8_t digest[32],
                       const uint8_t *sig, size_t sig_len)
{
        uint64_t t0 = board_ns();
        int r = mcugw_crypto_psa.ecdsa_p256_verify(ctx, pub, digest, sig, sig_len);

        insn.ecdsa_verify = (uint32_t)(board_ns() - t0);
        insn.ecdsa_n++;
        return r;
}

const struct port_insn *port_insn(void)
{
        return &insn;
}

void port_init(struct mcugw_device_port *port, struct mcugw_device_keys *keys,
               const struct prov_page *prov)
{
        prov_page = prov;
        mbedtls_memory_buffer_alloc_init(heap, sizeof heap);
        memset(port, 0, sizeof *port);
        port->send = link_send;
        port->recv = link_recv;
        port->now_ms = now_ms;
        timed_crypto = mcugw_crypto_psa;
        timed_crypto.x25519 = timed_x25519;
        timed_crypto.ecdsa_p256_verify = timed_ecdsa;
        port->crypto = &timed_crypto;
        memset(keys, 0, sizeof *keys);
        keys->static_priv = prov->device_priv;
        if (mcugw_crypto_psa.x25519_public(mcugw_crypto_psa.ctx, device_pub, prov->device_priv) ==
            0)
                keys->static_pub = device_pub; /* else computed at each handshake */
        keys->gateway_pub = prov->gateway_pub;
        keys->device_id = prov->device_id;
}

void port_heap_stats(uint32_t *peak, uint32_t *cur)
{
        size_t max_used, max_blocks, cur_used, cur_blocks;

        mbedtls_memory_buffer_alloc_max_get(&max_used, &max_blocks);
        mbedtls_memory_buffer_alloc_cur_get(&cur_used, &cur_blocks);
        *peak = (uint32_t)max_used;
        *cur = (uint32_t)cur_used;
}
