/*
 * fuzz_route.c - libFuzzer target for loanwire-query's request routing and
 * parameter parsing (consumers/query/src/route.c): the path router, the
 * /v1/alerts parameters and --listen. The input is up to five '\n'-separated
 * fields: path, since, rule, limit, listen; the first byte's low bits say
 * which of since, rule and limit are absent (NULL), as MHD hands them over.
 * Whatever is accepted must be what the API documents.
 */
#include "loanwire/id.h"
#include "loanwire/listen.h"
#include "loanwire/query.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf, *f[5] = {NULL, NULL, NULL, NULL, NULL}, *p, bid[LW_BORROWER_ID_LEN + 1];
    char err[512], host[64], ip[16];
    unsigned flags;
    lw_alerts_params_t ap;
    bool bad;
    int port, n = 0;

    if (size == 0)
        return 0;
    flags = data[0];
    buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    for (p = buf; n < 5; n++) {
        f[n] = p;
        p = strchr(p, '\n');
        if (!p)
            break;
        *p++ = '\0';
    }

    /* Routing: an exposure route without bad_id names a valid id, and the
     * path is exactly prefix + id + suffix. */
    lw_route_t r = lw_query_route(f[0], bid, &bad);
    if (r == LW_ROUTE_EXPOSURE && !bad) {
        char want[128];
        if (!lw_borrower_id_is_valid(bid))
            abort();
        snprintf(want, sizeof want, "/v1/borrowers/%s/exposure", bid);
        if (strcmp(want, f[0]) != 0)
            abort();
    }
    if ((r == LW_ROUTE_HEALTHZ && strcmp(f[0], "/healthz") != 0) ||
        (r == LW_ROUTE_METRICS && strcmp(f[0], "/metrics") != 0) ||
        (r == LW_ROUTE_ALERTS && strcmp(f[0], "/v1/alerts") != 0))
        abort();
    if (r != LW_ROUTE_EXPOSURE && (bad || bid[0]))
        abort();

    /* /v1/alerts parameters. */
    err[0] = '\0';
    if (lw_alerts_params_parse(flags & 1 ? NULL : f[1], flags & 2 ? NULL : f[2],
                               flags & 4 ? NULL : f[3], &ap, err, sizeof err) == LW_OK) {
        long long ms, seq;
        char tail;
        if (ap.limit < 1 || ap.limit > LW_QUERY_ALERTS_MAX)
            abort();
        if (ap.has_since && sscanf(ap.since_id, "%lld-%lld%c", &ms, &seq, &tail) != 2)
            abort();
        if (ap.since_stream < -1 || ap.since_stream >= 16384 ||
            (ap.since_stream >= 0 && !ap.since_exclusive))
            abort();
        if (ap.has_rule) {
            size_t len = strlen(ap.rule);
            if (len == 0 || len > LW_ID_MAX)
                abort();
            for (size_t i = 0; i < len; i++)
                if (!isalnum((unsigned char)ap.rule[i]) && !strchr("_-.:", ap.rule[i]))
                    abort();
        }
    } else if (!err[0]) {
        abort(); /* every refusal says why */
    }

    /* --listen. */
    err[0] = '\0';
    if (lw_listen_parse_host(f[4] ? f[4] : f[0], host, sizeof host, &port, err, sizeof err) ==
        LW_OK) {
        if (port < 0 || port > 65535)
            abort();
        if (inet_pton(AF_INET, host, ip) != 1 && inet_pton(AF_INET6, host, ip) != 1)
            abort();
    } else if (!err[0]) {
        abort();
    }
    free(buf);
    return 0;
}
