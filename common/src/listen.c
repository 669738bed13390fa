/*
 * listen.c - HOST:PORT of a listening socket (loanwire/listen.h).
 *
 * Numeric addresses only: a metrics or API listener should bind exactly
 * where the operator said (loopback by default), not wherever a name
 * resolves to at start-up.
 */
#include "loanwire/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lw_err_t lw_listen_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *errstr,
                         size_t errstr_size)
{
    char host[64];
    const char *port;
    size_t hlen;

    memset(ss, 0, sizeof *ss);
    if (!s || !*s) {
        snprintf(errstr, errstr_size, "listen address: empty");
        return LW_ERR_CONFIG;
    }
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') {
            snprintf(errstr, errstr_size, "listen address %s: expected [IPv6]:PORT", s);
            return LW_ERR_CONFIG;
        }
        hlen = (size_t)(rb - s - 1);
        if (hlen == 0 || hlen >= sizeof host) {
            snprintf(errstr, errstr_size, "listen address %s: bad host", s);
            return LW_ERR_CONFIG;
        }
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        port = rb + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon) {
            hlen = (size_t)(colon - s);
            if (hlen == 0 || hlen >= sizeof host) {
                snprintf(errstr, errstr_size, "listen address %s: bad host", s);
                return LW_ERR_CONFIG;
            }
            memcpy(host, s, hlen);
            host[hlen] = '\0';
            port = colon + 1;
        } else {
            /* a bare port listens on loopback: exposing a port beyond the
             * machine should be a decision written out, not a default */
            snprintf(host, sizeof host, "%s", LW_LISTEN_DEFAULT_HOST);
            port = s;
        }
    }
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*port || *end || errno || p < 0 || p > 65535 || !(*port >= '0' && *port <= '9')) {
        snprintf(errstr, errstr_size, "listen address %s: port must be 0..65535", s);
        return LW_ERR_CONFIG;
    }
    /* the one name allowed: it means loopback everywhere */
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)p);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)p);
        *len = sizeof *a6;
    } else {
        snprintf(errstr, errstr_size,
                 "listen address %s: host must be a numeric IPv4 or IPv6 address", s);
        return LW_ERR_CONFIG;
    }
    return LW_OK;
}

lw_err_t lw_listen_parse_host(const char *s, char *host, size_t host_size, int *port, char *errstr,
                              size_t errstr_size)
{
    struct sockaddr_storage ss;
    socklen_t len;
    lw_err_t err = lw_listen_parse(s, &ss, &len, errstr, errstr_size);

    if (err != LW_OK)
        return err;
    const void *addr = ss.ss_family == AF_INET
                           ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                           : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
    if (!inet_ntop(ss.ss_family, addr, host, (socklen_t)host_size)) {
        snprintf(errstr, errstr_size, "listen address %s: host too long", s);
        return LW_ERR_CONFIG;
    }
    *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                          : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return LW_OK;
}
