/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <uv.h>

#include "basic/conf-parser.h"

/*
 * The gateway's own MQTT certificate (docs/provisioning.md): fleet provisioning by claim and
 * certificate rotation over the AWS IoT fleet provisioning MQTT API.
 *
 * Provisioning: while [MQTT] CertificateFile= does not exist and a claim is configured, the
 * session connects with the claim (the gateway asks provision_use_claim() and gives the claim to
 * cloud_session_new()) and holds telemetry back. Once up, a new P-256 key is generated here (it
 * never leaves the gateway), a CSR with CN = the gateway name goes to
 * $aws/certificates/create-from-csr/json, the certificate and its ownership token come back on
 * .../accepted, and $aws/provisioning-templates/T/provision/json registers the thing. Rotation runs
 * the same CSR flow on the current certificate, without the template.
 *
 * Either way the new pair is written next to the configured files as FILE.new (key 0600, both
 * fsynced), the session switches to it, and only after a CONNACK with it are they renamed over
 * [MQTT] KeyFile= and CertificateFile= (key first). Two refused connection attempts (or a minute
 * without one) discard the new pair and switch back. provision_recover() tidies up a switch a
 * crash interrupted: both .new files present means not committed (discarded); only the
 * certificate's means the key was already renamed (the certificate follows). A certificate
 * file is therefore either absent, the old one or the complete new one.
 */

/* [Provisioning] in the configuration (docs/provisioning.md). */
struct provision_options {
        char *claim_cert;            /* ClaimCertificateFile= */
        char *claim_key;             /* ClaimKeyFile= */
        char *template_name;         /* Template=: the provisioning template's name */
        struct conf_strv parameters; /* Parameters=Key=Value */
        uint64_t rotate_before_usec; /* RotateBeforeExpiry=; 0: only `cert rotate` */
        int cbor;                    /* Format=: 0 json, 1 cbor */
};

/* Parameters=Key=Value (config_parser_t, field: struct conf_strv). */
int provision_config_parse_parameter(const char *v, void *field, const char **reason);
/* Format=json|cbor (field: int): the payload format of the fleet provisioning API's topics. */
int provision_config_parse_format(const char *v, void *field, const char **reason);

struct provision;
struct relay_options;
struct cloud_session;
struct audit;

/* True if the session must start on the claim: a claim is configured and the certificate
 * file does not exist yet. */
bool provision_use_claim(const struct relay_options *mqtt, const struct provision_options *o);
/* Finish or discard a certificate switch that a crash interrupted. Before cloud_session_new(). */
void provision_recover(const struct relay_options *mqtt);

/* Listens to the cloud session; starts provisioning when it connects on the claim, and checks
 * the certificate's expiry when RotateBeforeExpiry= is set. */
/* state_dir holds the thing name an earlier provisioning registered (may be NULL). */
int provision_new(uv_loop_t *loop, const struct provision_options *o,
                  const struct relay_options *mqtt, const char *state_dir, const char *gateway,
                  struct cloud_session *session, struct audit *audit, struct provision **ret);
/* `cert.show`: {"file","certificate": provision_cert_info() or null (while provisioning),
 * "in_use","rotation":{"automatic","before_expiry_s"},"provisioning"}; -ENOENT with the reason
 * in err when there is no certificate. */
int provision_cert_json(struct provision *p, json_t **ret, char *err, size_t errlen);
/* Start a certificate rotation now (`cert.rotate`); 0 or -errno with a reason in err. */
int provision_rotate(struct provision *p, const char *actor, char *err, size_t errlen);
/* The thing name RegisterThing returned, persisted in StateDirectory/thing-name by an earlier
 * provisioning: 0 and the name, -ENOENT (never provisioned) or -EINVAL (not a thing name). The
 * gateway uses it as its name in the cloud (client id, Jobs and Defender topics). */
int provision_thing_name(const char *state_dir, char *buf, size_t n);
/* Called once provisioning completed with a thing name other than the gateway's name (stored
 * already): the gateway restarts itself to use it. */
typedef void (*provision_thing_fn)(void *ud, const char *thing_name);
void provision_set_thing_listener(struct provision *p, provision_thing_fn fn, void *ud);
/* {"mode","state","complete","attempts","thing_name","certificate_id","last_error"} */
json_t *provision_status_json(const struct provision *p);
/* Close the timers; memory goes in the last close callback. Accepts NULL. */
void provision_stop(struct provision *p);

/* Pure helpers, exposed for tests. A new P-256 key and a PEM CSR for it with CN = cn. */
int provision_make_csr(const char *cn, EVP_PKEY **ret_key, char **ret_csr_pem);
/* Subject, issuer, serial, not_before_us/not_after_us (UNIX µs), expires_in_ms (negative once
 * expired), sha256 fingerprint
 * of a PEM certificate file; NULL and err on failure. */
json_t *provision_cert_info(const char *path, char *err, size_t n);
