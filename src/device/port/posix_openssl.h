/* SPDX-License-Identifier: Apache-2.0 */
/* Crypto port on OpenSSL 3 (EVP) for the gateway, the simulator and host tests. */
#ifndef MCUGW_PORT_POSIX_OPENSSL_H
#define MCUGW_PORT_POSIX_OPENSSL_H

#include <stddef.h>
#include <stdint.h>

#include "mcugw/device.h"
#include "mcugw/proto.h"

/**
 * A ready-to-use crypto table backed by OpenSSL 3: X25519 (EVP_PKEY_X25519),
 * ChaCha20-Poly1305 (EVP_chacha20_poly1305), SHA-256 and RAND_bytes. Stateless and
 * thread-safe; ctx is NULL.
 */
extern const struct mcugw_crypto mcugw_crypto_openssl;

/** Generate a fresh X25519 key pair with OpenSSL. Returns 0 or MCUGW_ECRYPTO. */
int mcugw_openssl_keygen(uint8_t priv[32], uint8_t pub[32]);

/** State of a POSIX file-descriptor link (tty, pty, socket) used by the device port. */
struct mcugw_posix_link {
        int fd;
};

/**
 * Fill @p port for a device whose link is the file descriptor @p fd (owned by the caller):
 * send writes all bytes (waiting with poll() when the fd is non-blocking), recv reads what is
 * available without blocking, now_ms is CLOCK_MONOTONIC, crypto is mcugw_crypto_openssl.
 * I/O failures and end-of-file are reported as MCUGW_EIO.
 */
void mcugw_posix_port_init(struct mcugw_device_port *port, struct mcugw_posix_link *link, int fd);

#endif
