/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Minimal mbedTLS 2.28 configuration for libmcugw-device on a Cortex-M with the PSA port
 * (src/device/port/psa_mbedtls.c): PSA Crypto with volatile keys only, X25519,
 * ChaCha20-Poly1305, SHA-256, ECDSA P-256 verify (for signed OTA images), CTR_DRBG seeded from
 * mbedtls_hardware_poll() (port.c: a TRNG on real parts, a seeded generator under QEMU), and a
 * static heap (mbedtls_memory_buffer_alloc). Passed with -DMBEDTLS_CONFIG_FILE="mbedtls_config.h".
 */
#ifndef MCUGW_FW_MBEDTLS_CONFIG_H
#define MCUGW_FW_MBEDTLS_CONFIG_H

/* System: no OS, no file system, no clock, no sockets. */
#define MBEDTLS_HAVE_ASM
#define MBEDTLS_NO_PLATFORM_ENTROPY
#define MBEDTLS_ENTROPY_HARDWARE_ALT /* mbedtls_hardware_poll() in port.c */
#define MBEDTLS_PLATFORM_C
#define MBEDTLS_PLATFORM_MEMORY /* calloc/free from the static heap */
#define MBEDTLS_MEMORY_BUFFER_ALLOC_C
#define MBEDTLS_MEMORY_DEBUG /* peak heap use, printed on the console */

/* PSA Crypto, volatile keys only. */
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_PSA_KEY_SLOT_COUNT 4
#define MBEDTLS_CIPHER_C
#define MBEDTLS_MD_C

/* Random: CTR_DRBG (AES-256) over the entropy module. */
#define MBEDTLS_ENTROPY_C
#define MBEDTLS_ENTROPY_FORCE_SHA256
#define MBEDTLS_CTR_DRBG_C
#define MBEDTLS_AES_C
#define MBEDTLS_AES_ROM_TABLES
#define MBEDTLS_AES_FEWER_TABLES

/* X25519 (and P-256 for ECDSA verify). */
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_ECP_C
#define MBEDTLS_ECDH_C
#define MBEDTLS_ECP_DP_CURVE25519_ENABLED
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECP_NIST_OPTIM
#define MBEDTLS_ECP_WINDOW_SIZE 2
#define MBEDTLS_ECP_FIXED_POINT_OPTIM 0
#define MBEDTLS_MPI_MAX_SIZE 32
#define MBEDTLS_MPI_WINDOW_SIZE 1
#define MBEDTLS_ECDSA_C
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C

/* AEAD and hash. */
#define MBEDTLS_CHACHA20_C
#define MBEDTLS_POLY1305_C
#define MBEDTLS_CHACHAPOLY_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA256_SMALLER

#include "mbedtls/check_config.h"

#endif
