/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>

/*
 * The gateway's own credentials: its TLS client certificate and private key, from files or from
 * a PKCS#11 token (SoftHSM, a TPM's PKCS#11 module, a smart card) addressed by an RFC 7512 URI
 * such as "pkcs11:token=gw;object=mqtt-key;type=private?pin-value=1234", loaded through OpenSSL's
 * pkcs11 engine (libengine-pkcs11-openssl). Private key files must be owner-only; anything else is
 * refused with a message that says how to fix it. Errors are written to err (one line).
 */

/* spec: a file path (PEM or DER) or a "pkcs11:" URI; module: the PKCS#11 module for URIs (NULL:
 * the engine's default, p11-kit). */
int cred_load_private_key(const char *spec, const char *module, EVP_PKEY **ret, char *err,
                          size_t errlen);
int cred_load_certificate(const char *path, X509 **ret, char *err, size_t errlen);

/* The whole file (a regular file, at most FILEIO_PEM_MAX bytes, read without blocking on a FIFO
 * or device) in a memory BIO for OpenSSL's *_bio readers; secret: the file must be owner-only and
 * the BIO is in secure memory. */
int cred_file_bio(const char *path, bool secret, BIO **ret, char *err, size_t errlen);

/* The trust anchors in a PEM file (CAFile=) into ctx's store; instead of
 * SSL_CTX_load_verify_locations(), which opens the file itself. */
int cred_ssl_ctx_load_ca(SSL_CTX *ctx, const char *path, char *err, size_t errlen);
/* The first certificate in a PEM file and the chain after it; instead of
 * SSL_CTX_use_certificate_chain_file(). */
int cred_ssl_ctx_use_chain(SSL_CTX *ctx, const char *path, char *err, size_t errlen);

/* Load both into ctx and check that they belong together. */
int cred_ssl_ctx_use(SSL_CTX *ctx, const char *cert_path, const char *key_spec, const char *module,
                     char *err, size_t errlen);

/* A private key in the configuration (config_parser_t, field: char *): an absolute path, or an
 * RFC 7512 "pkcs11:" URI. */
int cred_config_parse_key(const char *v, void *field, const char **reason);
