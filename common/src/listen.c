/*
 * listen.c - HOST:PORT of a listening socket (loanwire/listen.h).
 *
 * Numeric addresses only: a metrics or API listener should bind exactly
 * where the operator said (loopback by default), not wherever a name
 * resolves to at start-up.
 */
#include "loanwire/listen.h"

#include <arpa/inet.h>
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
        s++;
        port = rb + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            snprintf(errstr, errstr_size, "listen address %s: expected HOST:PORT", s);
            return LW_ERR_CONFIG;
        }
        hlen = (size_t)(colon - s);
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof host) {
        snprintf(errstr, errstr_size, "listen address: bad host");
        return LW_ERR_CONFIG;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535) {
        snprintf(errstr, errstr_size, "listen address %s: port must be 0..65535", port);
        return LW_ERR_CONFIG;
    }
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
        snprintf(errstr, errstr_size, "listen address %s is not a numeric IP address", host);
        return LW_ERR_CONFIG;
    }
    return LW_OK;
}
