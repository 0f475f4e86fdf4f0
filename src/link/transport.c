/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "basic/macro.h"
#include "link/transport.h"

static const struct {
        unsigned baud;
        speed_t speed;
} bauds[] = {
        { 1200, B1200 },       { 2400, B2400 },       { 4800, B4800 },       { 9600, B9600 },
        { 19200, B19200 },     { 38400, B38400 },     { 57600, B57600 },     { 115200, B115200 },
        { 230400, B230400 },   { 460800, B460800 },   { 500000, B500000 },   { 576000, B576000 },
        { 921600, B921600 },   { 1000000, B1000000 }, { 1152000, B1152000 }, { 1500000, B1500000 },
        { 2000000, B2000000 }, { 3000000, B3000000 }, { 4000000, B4000000 },
};

static speed_t baud_speed(unsigned baud)
{
        for (size_t i = 0; i < ELEMENTSOF(bauds); i++)
                if (bauds[i].baud == baud)
                        return bauds[i].speed;
        return 0;
}

bool transport_baud_supported(unsigned baud)
{
        return baud_speed(baud) != 0;
}

static int parse_port(const char *s, unsigned *ret)
{
        char *end;
        unsigned long p;

        if (!*s || *s == '-' || *s == '+')
                return -EINVAL;
        errno = 0;
        p = strtoul(s, &end, 10);
        if (errno || *end || p == 0 || p > 65535)
                return -EINVAL;
        *ret = (unsigned)p;
        return 0;
}

int transport_parse_listen(const char *spec, struct transport_endpoint *ret, const char **reason)
{
        struct transport_endpoint ep = { 0 };

        if (strncmp(spec, "unix:", 5) == 0) {
                const char *p = spec + 5;
                if (p[0] != '/') {
                        *reason = "unix: needs an absolute path";
                        return -EINVAL;
                }
                if (strlen(p) >= sizeof ep.path) {
                        *reason = "socket path longer than 107 bytes";
                        return -EINVAL;
                }
                ep.kind = TRANSPORT_UNIX;
                strcpy(ep.path, p);
        } else if (strncmp(spec, "tcp:", 4) == 0) {
                const char *h = spec + 4, *colon;
                char host[64];
                unsigned port;
                size_t hl;

                if (*h == '[') {
                        const char *rb = strchr(h, ']');
                        if (!rb || rb[1] != ':') {
                                *reason = "expected tcp:[IPv6]:PORT";
                                return -EINVAL;
                        }
                        hl = (size_t)(rb - h - 1);
                        h++;
                        colon = rb + 1;
                } else {
                        colon = strrchr(h, ':');
                        if (!colon) {
                                *reason = "expected tcp:HOST:PORT";
                                return -EINVAL;
                        }
                        hl = (size_t)(colon - h);
                }
                if (hl == 0 || hl >= sizeof host) {
                        *reason = "bad host";
                        return -EINVAL;
                }
                memcpy(host, h, hl);
                host[hl] = 0;
                if (parse_port(colon + 1, &port) < 0) {
                        *reason = "port must be 1..65535";
                        return -EINVAL;
                }
                ep.kind = TRANSPORT_TCP;
                struct sockaddr_in *a4 = (struct sockaddr_in *)&ep.addr;
                struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ep.addr;
                if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
                        a4->sin_family = AF_INET;
                        a4->sin_port = htons((uint16_t)port);
                        ep.addr_len = sizeof *a4;
                } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
                        a6->sin6_family = AF_INET6;
                        a6->sin6_port = htons((uint16_t)port);
                        ep.addr_len = sizeof *a6;
                } else {
                        *reason = "host must be a numeric IPv4 or [IPv6] address";
                        return -EINVAL;
                }
        } else {
                *reason = "expected unix:/PATH or tcp:ADDRESS:PORT";
                return -EINVAL;
        }
        *ret = ep;
        return 0;
}

int transport_parse_serial(const char *spec, struct transport_endpoint *ret, const char **reason)
{
        struct transport_endpoint ep = { .kind = TRANSPORT_SERIAL, .baud = TRANSPORT_DEFAULT_BAUD };
        const char *colon = strrchr(spec, ':');
        size_t len = strlen(spec);

        if (spec[0] != '/') {
                *reason = "expected an absolute device path, optionally with :BAUD";
                return -EINVAL;
        }
        /* Only an all-digit suffix is a baud rate: /dev/serial/by-path names contain colons. */
        if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
                unsigned long b;
                errno = 0;
                b = strtoul(colon + 1, NULL, 10);
                if (errno || b > 100000000) {
                        *reason = "bad baud rate after ':'";
                        return -EINVAL;
                }
                if (!transport_baud_supported((unsigned)b)) {
                        *reason = "unsupported baud rate (use a standard rate such as 115200)";
                        return -EINVAL;
                }
                ep.baud = (unsigned)b;
                len = (size_t)(colon - spec);
        }
        if (len >= sizeof ep.path || len < 2) {
                *reason = "device path too long";
                return -EINVAL;
        }
        memcpy(ep.path, spec, len);
        ep.path[len] = 0;
        *ret = ep;
        return 0;
}

void transport_endpoint_name(const struct transport_endpoint *ep, char *buf, size_t n)
{
        char host[INET6_ADDRSTRLEN] = "?";

        switch (ep->kind) {
        case TRANSPORT_UNIX: snprintf(buf, n, "unix:%s", ep->path); break;
        case TRANSPORT_SERIAL: snprintf(buf, n, "serial:%s", ep->path); break;
        case TRANSPORT_TCP:
                if (ep->addr.ss_family == AF_INET) {
                        const struct sockaddr_in *a = (const void *)&ep->addr;
                        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
                        snprintf(buf, n, "tcp:%s:%u", host, ntohs(a->sin_port));
                } else {
                        const struct sockaddr_in6 *a = (const void *)&ep->addr;
                        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
                        snprintf(buf, n, "tcp:[%s]:%u", host, ntohs(a->sin6_port));
                }
                break;
        }
}

int transport_listen(const struct transport_endpoint *ep, int backlog)
{
        _cleanup_close_ int fd = -1;
        int one = 1;

        if (ep->kind == TRANSPORT_UNIX) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                struct stat st;

                strcpy(sa.sun_path, ep->path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                /* Replace a stale socket left by a crash, never any other kind of file. */
                if (lstat(ep->path, &st) == 0) {
                        if (!S_ISSOCK(st.st_mode))
                                return -EEXIST;
                        unlink(ep->path);
                }
                if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                        return -errno;
        } else if (ep->kind == TRANSPORT_TCP) {
                fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                if (bind(fd, (const struct sockaddr *)&ep->addr, ep->addr_len) < 0)
                        return -errno;
        } else
                return -EINVAL;
        if (listen(fd, backlog) < 0)
                return -errno;
        return TAKE_FD(fd);
}

int transport_accept(int listen_fd)
{
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int one = 1;

        if (fd < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
            (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
}

int transport_source_from_addr(const struct sockaddr *sa, socklen_t len, uid_t uid,
                               struct transport_source *ret)
{
        static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        char a[INET6_ADDRSTRLEN];

        memset(ret, 0, sizeof *ret);
        if (sa->sa_family == AF_UNIX) {
                ret->key[0] = 'u';
                memcpy(ret->key + 1, &uid, sizeof uid);
                snprintf(ret->name, sizeof ret->name, "uid %u", (unsigned)uid);
                return 0;
        }
        if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
                ret->key[0] = 4;
                memcpy(ret->key + 1, &in->sin_addr, 4);
                inet_ntop(AF_INET, &in->sin_addr, ret->name, sizeof ret->name);
                return 0;
        }
        if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
                struct in6_addr p = in6->sin6_addr;
                if (memcmp(p.s6_addr, v4mapped, sizeof v4mapped) == 0) {
                        ret->key[0] = 4;
                        memcpy(ret->key + 1, p.s6_addr + 12, 4);
                        inet_ntop(AF_INET, p.s6_addr + 12, ret->name, sizeof ret->name);
                        return 0;
                }
                ret->key[0] = 6;
                memcpy(ret->key + 1, p.s6_addr, 8);
                memset(p.s6_addr + 8, 0, 8);
                inet_ntop(AF_INET6, &p, a, sizeof a);
                snprintf(ret->name, sizeof ret->name, "%s/64", a);
                return 0;
        }
        return -EAFNOSUPPORT;
}

int transport_peer_source(int fd, struct transport_source *ret)
{
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        struct ucred cred = { .uid = (uid_t)-1 };
        socklen_t cl = sizeof cred;

        if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
                return -errno;
        if (ss.ss_family == AF_UNIX && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
                return -errno;
        return transport_source_from_addr((struct sockaddr *)&ss, sl, cred.uid, ret);
}

int transport_serial_open(const struct transport_endpoint *ep)
{
        _cleanup_close_ int fd = -1;
        struct termios t;
        speed_t sp = baud_speed(ep->baud);

        fd = open(ep->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (!isatty(fd))
                return TAKE_FD(fd);
        if (!sp)
                return -EINVAL;
        if (tcgetattr(fd, &t) < 0)
                return -errno;
        cfmakeraw(&t);
        t.c_cflag &= ~(CSTOPB | PARENB | CRTSCTS | CSIZE);
        t.c_cflag |= CS8 | CLOCAL | CREAD;
        t.c_iflag &= ~(IXON | IXOFF | IXANY);
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        if (cfsetispeed(&t, sp) < 0 || cfsetospeed(&t, sp) < 0)
                return -errno;
        if (tcsetattr(fd, TCSANOW, &t) < 0)
                return -errno;
        return TAKE_FD(fd);
}
