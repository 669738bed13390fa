/*
 * loanwire/listen.h - a listening address given on the command line.
 */
#ifndef LOANWIRE_LISTEN_H
#define LOANWIRE_LISTEN_H

#include "loanwire/error.h"

#include <stddef.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A bare PORT listens here. */
#define LW_LISTEN_DEFAULT_HOST "127.0.0.1"

/* "IPv4:PORT", "[IPv6]:PORT" or "PORT" (on LW_LISTEN_DEFAULT_HOST), numeric
 * only (no name lookup at start-up) except "localhost", which is 127.0.0.1;
 * port 0..65535 (0: any free port). The one parser of every --listen and
 * --metrics-listen. */
lw_err_t lw_listen_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *errstr,
                         size_t errstr_size);

/* The same, as the numeric host text (into host, host_size bytes) and the
 * port, for servers that take a host string (libmicrohttpd's callers). */
lw_err_t lw_listen_parse_host(const char *s, char *host, size_t host_size, int *port, char *errstr,
                              size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_LISTEN_H */
