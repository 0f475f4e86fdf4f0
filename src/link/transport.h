/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/*
 * Byte-stream transports of the MCU link, at the file-descriptor level: parsing the endpoint
 * specifications of the configuration, listening stream sockets (Unix, TCP), accepting, and
 * serial ports in raw mode. No event loop here: the link manager (link.c) drives every fd with
 * a uv_poll handle, so sockets and ttys go through one code path.
 *
 *   ListenStream=unix:/run/mcugw/link.sock     ListenStream=tcp:127.0.0.1:7878
 *   SerialPort=/dev/ttyUSB0                    SerialPort=/dev/ttyUSB0:921600
 */

enum transport_kind {
        TRANSPORT_UNIX,
        TRANSPORT_TCP,
        TRANSPORT_SERIAL,
};

#define TRANSPORT_DEFAULT_BAUD 115200u

struct transport_endpoint {
        enum transport_kind kind;
        char path[108];               /* unix socket or serial device path */
        struct sockaddr_storage addr; /* TCP */
        socklen_t addr_len;
        unsigned baud; /* serial */
};

/* "unix:/abs/path" or "tcp:HOST:PORT" (HOST an IPv4 address or [IPv6]). Returns 0 or -EINVAL
 * with a static reason. */
int transport_parse_listen(const char *spec, struct transport_endpoint *ret, const char **reason);
/* "/dev/PATH" or "/dev/PATH:BAUD". Returns 0 or -EINVAL with a static reason. */
int transport_parse_serial(const char *spec, struct transport_endpoint *ret, const char **reason);
/* Is this a baud rate termios can set? */
bool transport_baud_supported(unsigned baud);

/* A listening, non-blocking, close-on-exec socket (a stale Unix socket file is replaced).
 * Returns the fd or -errno. */
int transport_listen(const struct transport_endpoint *ep, int backlog);
/* Accept one connection as a non-blocking, close-on-exec fd; -EAGAIN when none is waiting. */
int transport_accept(int listen_fd);
/* Open a serial device: O_NOCTTY | O_NONBLOCK, termios raw 8N1 at ep->baud, no flow control.
 * Not a tty (e.g. a FIFO in tests) is accepted as is. Returns fd or -errno. */
int transport_serial_open(const struct transport_endpoint *ep);
/* Who is at the other end of an accepted connection, for per-source limits: the peer's IPv4
 * address, the /64 prefix of its IPv6 address (one host usually holds a whole /64; IPv4-mapped
 * addresses count as IPv4), or the peer's uid on a Unix socket. `key` compares with memcmp. */
struct transport_source {
        uint8_t key[17];
        char name[64]; /* "192.0.2.7", "2001:db8:1:2::/64", "uid 1000" */
};
/* From an address (family AF_INET, AF_INET6) or, for AF_UNIX, the peer's uid. -EAFNOSUPPORT. */
int transport_source_from_addr(const struct sockaddr *sa, socklen_t len, uid_t uid,
                               struct transport_source *ret);
/* getpeername() / SO_PEERCRED of a connected socket. */
int transport_peer_source(int fd, struct transport_source *ret);

/* Human-readable form of an endpoint ("unix:/x", "tcp:127.0.0.1:7878", "serial:/dev/ttyUSB0"). */
void transport_endpoint_name(const struct transport_endpoint *ep, char *buf, size_t n);
