/* SPDX-License-Identifier: Apache-2.0 */
/* The SDK port of the reference firmware: link, clock, crypto, keys. */
#ifndef MCUGW_FW_PORT_H
#define MCUGW_FW_PORT_H

#include <stdint.h>

#include "mcugw/device.h"

/* The provisioning page (the last 4 KiB flash page, written at the factory; under QEMU loaded
 * with -device loader,file=prov.bin,addr=0x3f000). Little-endian, packed by hand. */
#define PROV_MAGIC 0x5057474du /* "MGWP" */
#define PROV_VERSION 3u
struct prov_page {
        uint32_t magic;
        uint32_t version;        /* 2 */
        char device_id[36];      /* NUL-terminated, 1..32 printable ASCII */
        uint8_t device_priv[32]; /* X25519 private key of this device */
        uint8_t gateway_pub[32]; /* the gateway's X25519 public key, pinned */
        uint8_t rng_seed[32];    /* QEMU ONLY: seed of the emulated entropy source */
        uint8_t signer_pub[65];  /* OTA code-signing key, P-256 0x04||X||Y; 0x00...: no OTA */
        uint8_t pad[3];
        /* QEMU ONLY: stands in for the boot counter a real device keeps in flash (or a retained
         * register) and increments at every power-on; with the resets counted since then
         * (slots_count_boot()) it keeps the handshake timestamps growing (docs/protocol.md, 3.5).
         */
        uint32_t boot_counter;
};

/** Instruction counts of the crypto operations (-icount shift=0: 1 instruction per ns). */
struct port_insn {
        uint32_t x25519, x25519_n;      /* the last one, and how many */
        uint32_t ecdsa_verify, ecdsa_n; /* the last one */
};

/** The provisioning page, or NULL if it is blank or malformed. */
const struct prov_page *port_prov(void);

/** Set up the static mbedTLS heap and fill @p port and @p keys from the board and @p prov. */
void port_init(struct mcugw_device_port *port, struct mcugw_device_keys *keys,
               const struct prov_page *prov);

/** Peak and current mbedTLS heap use in bytes. */
void port_heap_stats(uint32_t *peak, uint32_t *cur);

/** The crypto operations timed by the port (its crypto table wraps the PSA one). */
const struct port_insn *port_insn(void);

#endif
