/* SPDX-License-Identifier: Apache-2.0 */
/* Crypto port on the PSA Crypto API (mbedTLS 2.28+), the MCU-class port. */
#ifndef MCUGW_PORT_PSA_MBEDTLS_H
#define MCUGW_PORT_PSA_MBEDTLS_H

#include "mcugw/proto.h"

/**
 * Crypto table on PSA Crypto: X25519 via psa_raw_key_agreement(PSA_ALG_ECDH) on
 * PSA_ECC_FAMILY_MONTGOMERY keys, PSA_ALG_CHACHA20_POLY1305, PSA_ALG_SHA_256 and
 * psa_generate_random. psa_crypto_init() is called on first use; ctx is NULL. Keys are
 * imported as volatile keys for one operation and destroyed right after.
 */
extern const struct mcugw_crypto mcugw_crypto_psa;

#endif
