/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * Code-signing verification (docs/ota.md): ECDSA P-256 over SHA-256 of the whole file, the
 * signature DER-encoded (what AWS Signer puts into "sig-sha256-ecdsa"), checked against the
 * public key of the configured code-signing certificate. OpenSSL EVP; no other I/O than reading
 * the certificate and the file.
 */

struct ota_verifier;

/* Load a PEM certificate; refuses keys that are not EC P-256. 0 or -errno, reason in err. */
int ota_verifier_new(const char *cert_path, struct ota_verifier **ret, char *err, size_t errlen);
/* The same from PEM text in memory (tests). */
int ota_verifier_new_pem(const char *pem, size_t len, struct ota_verifier **ret, char *err,
                         size_t errlen);
void ota_verifier_free(struct ota_verifier *v);

/* 0 when sig is a valid signature of data; -EBADMSG (bad signature), other -errno. */
int ota_verify_buffer(const struct ota_verifier *v, const uint8_t *data, size_t len,
                      const uint8_t *sig, size_t sig_len);
/* Same over the first size bytes of the file at path (streamed in 64 KiB pieces); also
 * returns its SHA-256 in ret_sha256 (may be NULL). */
int ota_verify_file(const struct ota_verifier *v, const char *path, uint64_t size,
                    const uint8_t *sig, size_t sig_len, uint8_t ret_sha256[32]);

/* SHA-256 of a buffer / of the first size bytes of a file. */
int ota_sha256_buffer(const uint8_t *data, size_t len, uint8_t out[32]);
int ota_sha256_file(const char *path, uint64_t size, uint8_t out[32]);
void ota_hex(const uint8_t *p, size_t n, char *out); /* out: 2n + 1 */
