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

/* "IPv4:PORT" or "[IPv6]:PORT", numeric only (no name lookup at start-up),
 * port 0..65535 (0: any free port). */
lw_err_t lw_listen_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *errstr,
                         size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_LISTEN_H */
