/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <sys/resource.h>

#include "basic/rlimit-util.h"

int64_t rlimit_nofile_raise(uint64_t want)
{
        struct rlimit rl;
        rlim_t target;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return -errno;
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
                target = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
                if (target > rl.rlim_cur) {
                        rl.rlim_cur = target;
                        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                                return -errno;
                }
        }
        return rl.rlim_cur == RLIM_INFINITY ? INT64_MAX : (int64_t)rl.rlim_cur;
}
