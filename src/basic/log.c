/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
/* We pass CODE_FILE=/CODE_LINE= of the caller ourselves; without this sd_journal_send() adds its
 * own (log.c's), and every entry carries both. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "basic/log.h"

static int max_level = LOG_INFO;
static bool use_journal;
static bool force_stderr;
static const char *log_ident = "mcugw";

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",     [LOG_CRIT] = "crit",
        [LOG_ERR] = "error",   [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

int log_level_from_string(const char *s)
{
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (strcmp(s, level_names[i]) == 0)
                        return (int)i;
        if (strcmp(s, "err") == 0)
                return LOG_ERR;
        if (strcmp(s, "warn") == 0)
                return LOG_WARNING;
        return -EINVAL;
}

const char *log_level_to_string(int level)
{
        if (level < 0 || level >= (int)ELEMENTSOF(level_names))
                return "?";
        return level_names[level];
}

void log_set_level(int level)
{
        max_level = level;
}

int log_get_level(void)
{
        return max_level;
}

void log_force_stderr(bool on)
{
        force_stderr = on;
}

/* The journal sets JOURNAL_STREAM=dev:ino for the stderr it connected us to. */
static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == dev && st.st_ino == ino;
}

void log_open(const char *ident)
{
        log_ident = ident;
        use_journal = stderr_is_journal();
}

int log_internal(int level, int error, const char *device, const char *file, int line,
                 const char *fmt, ...)
{
        char buf[2048];
        va_list ap;
        int saved = errno;

        if (error < 0)
                error = -error;
        if (level > max_level)
                return -error;

        errno = error; /* so that %m prints strerror(error) */
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);

        if (use_journal && !force_stderr) {
                char lines[16];
                snprintf(lines, sizeof lines, "%d", line);
                if (device)
                        sd_journal_send("MESSAGE=%s: %s", device, buf, "PRIORITY=%d", level,
                                        "DEVICE_ID=%s", device, "CODE_FILE=%s", file,
                                        "CODE_LINE=%s", lines, "SYSLOG_IDENTIFIER=%s", log_ident,
                                        error ? "ERRNO=%d" : NULL, error, NULL);
                else
                        sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%d", level, "CODE_FILE=%s",
                                        file, "CODE_LINE=%s", lines, "SYSLOG_IDENTIFIER=%s",
                                        log_ident, error ? "ERRNO=%d" : NULL, error, NULL);
        } else if (device)
                fprintf(stderr, "%s: %s: device %s: %s\n", log_ident, level_names[level], device,
                        buf);
        else
                fprintf(stderr, "%s: %s: %s\n", log_ident, level_names[level], buf);

        errno = saved;
        return -error;
}
