/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>

/* Raise the soft limit on open files towards want, as far as the hard limit allows (systemd
 * starts services with a soft limit of 1024 and a high hard limit, and expects a daemon that
 * needs more to raise it itself; select() is not used here, so more is safe). Never lowers it.
 * Returns the soft limit now in effect, or -errno. */
int64_t rlimit_nofile_raise(uint64_t want);
