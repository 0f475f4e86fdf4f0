/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

#include "basic/conf-parser.h"
#include "devices/enroll.h"

/*
 * Just-in-time onboarding: a device the registry does not know may present, in handshake message
 * 1, an attestation — its manufacturer's ECDSA P-256 signature over its id and static public key
 * (docs/protocol.md, "Attestation"). If the signature verifies against a manufacturer key the
 * gateway trusts ([Onboarding] ManufacturerKey=) and that key is not revoked, the device is
 * enrolled as pending or active, per [Onboarding] Policy=. Everything else is refused.
 *
 *   attestation = u8 version (1) | u8 key_id_len (1..32) | key_id | r (32) | s (32)
 *   signed      = SHA-256("mcugw-attest-v1" | u8 id_len | id | static public key (32))
 */

#define ONBOARD_ATTEST_VERSION 1
#define ONBOARD_KEY_ID_MAX 32
#define ONBOARD_ATTEST_MAX (2 + ONBOARD_KEY_ID_MAX + 64)

enum onboard_policy {
        ONBOARD_OFF,
        ONBOARD_PENDING,
        ONBOARD_ACTIVE,
};

/* [Onboarding] in the configuration. */
struct onboard_options {
        int policy;                                 /* enum onboard_policy */
        struct conf_strv manufacturer_keys;         /* KEYID:/path/key.pem */
        struct conf_strv revoked_manufacturer_keys; /* KEYID */
};

/* Policy= off|pending|active (config_parser_t, field: int). */
int onboard_config_parse_policy(const char *v, void *field, const char **reason);

struct onboard;

/* Load the trusted manufacturer keys named in o; problems go to err as "file: message". */
int onboard_new(const struct onboard_options *o, struct onboard **ret, struct conf_errors *err);
void onboard_free(struct onboard *o);
enum onboard_policy onboard_policy(const struct onboard *o);

/* 0 if attest is a valid attestation of (id, pub) by a trusted, unrevoked manufacturer key;
 * -errno otherwise with a static reason. *ret_key_id names the key that signed (valid while o). */
int onboard_verify(const struct onboard *o, const char *id, size_t id_len,
                   const uint8_t pub[ENROLL_KEY_LEN], const uint8_t *attest, size_t attest_len,
                   const char **ret_key_id, const char **ret_reason);

/* The manufacturer's side (factory tools, the simulator): sign (id, pub) with an EC P-256 key.
 * Returns the attestation length or -errno. */
int onboard_attest_sign(EVP_PKEY *manufacturer_key, const char *key_id, const char *id,
                        const uint8_t pub[ENROLL_KEY_LEN], uint8_t *out, size_t cap);
