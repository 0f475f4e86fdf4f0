/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <jansson.h>
#include <uv.h>

/*
 * The cloud side of OTA (docs/ota.md): the AWS IoT Jobs MQTT API and MQTT file streams, over the
 * one cloud session (cloud/session.h).
 *
 *   $aws/things/{thing}/jobs/notify-next            new job            -> execution
 *   $aws/things/{thing}/jobs/$next/get[/accepted]   after (re)connect  -> execution
 *   $aws/things/{thing}/jobs/{jobId}/update[/accepted|/rejected]
 *        {"status": "IN_PROGRESS"|"SUCCEEDED"|"FAILED", "statusDetails": {flat string map},
 *         "clientToken": …}   statusDetails: receive "n/m", self_test "ready"/"active",
 *                              updatedBy, reason
 *   $aws/things/{thing}/streams/{stream}/get/cbor  -> data/cbor, rejected/cbor
 *
 * Things: the gateway's own thing (its name, or the thing fleet provisioning registered) and,
 * with Targeting=thing-per-device, one thing per device (ThingNameTemplate, inverted on every
 * incoming topic and looked up in the registry); messages of any other thing are counted,
 * audited once and never answered. Targeting=gateway: jobs for the gateway's thing name their
 * devices or groups ("mcugw": {"devices": […], "groups": […]}). $next/get goes out when the
 * session comes up and in sweeps over the registry paced under the publish quota. Each image is
 * downloaded once into the cache (block bitmap persisted: a restart resumes), with requests of
 * at most 128 KB, a few in flight; every request kind follows basic/retry.h (backoff with
 * jitter, bounded tries, then FAILED with the reason). A cancelled or removed execution stops
 * its download and aborts its transfers. The finished file goes to the rollout engine, which
 * checks the signature before any MCU gets a byte.
 */

struct ota_options;
struct cloud_session;
struct ota;
struct registry;
struct audit;
struct ota_jobs;

/* Only with a cloud session ([MQTT] Host=): the gateway does not start it otherwise. */
int ota_jobs_new(uv_loop_t *loop, const struct ota_options *o, const char *gateway,
                 struct cloud_session *session, struct ota *ota, struct registry *reg,
                 struct audit *audit, struct ota_jobs **ret);
void ota_jobs_stop(struct ota_jobs *j);
json_t *ota_jobs_status(struct ota_jobs *j);

/* Pure helpers (unit-tested). */
/* Expand {gateway} and {device}; -ENAMETOOLONG or -EINVAL (a / + # in the result). */
int ota_thing_name(const char *tmpl, const char *gateway, const char *device, char *out, size_t n);
/* The device whose thing the template makes thing (the inverse of ota_thing_name): 0 and the id
 * in out, or -ENOENT when thing is not of that form. */
int ota_thing_device(const char *tmpl, const char *gateway, const char *thing, char *out, size_t n);
/* Split "$aws/things/T/jobs/REST" or ".../streams/S/REST": 0 and the parts, or -EINVAL. */
int ota_topic_split(const char *topic, char *thing, size_t tn, char *kind, size_t kn, char *name,
                    size_t nn, const char **ret_rest);
