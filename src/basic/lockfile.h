/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <sys/types.h>

/*
 * One daemon per state directory: an exclusive flock(2) on DIR/NAME, held for the life of the
 * process (the kernel drops it when the process dies, so a crash never leaves a stale lock). The
 * holder writes its PID into the file so that a second daemon can say who has it.
 */

/* Take the lock. Returns the open descriptor (keep it; close it to release), -EBUSY with
 * *ret_holder set to the holder's PID (0 if unknown) when another process has it, or -errno. */
int lockfile_take(const char *path, pid_t *ret_holder);
