/*
 * metrics.c - loanwire-query's /metrics: its own figures only, in Prometheus
 * text format 0.0.4.
 *
 * Until 0.1 this summed the consumers' Redis hashes (lw:metrics:<id>), which
 * expire 15 s after a consumer stops: the sums dropped whenever one left, and
 * rate() read that as counter resets. Each loanwire-exposure now serves its
 * own counters (--metrics-listen) and Prometheus does the summing; this file
 * reads nothing from Redis. What it shows: build_info, requests by status
 * (a 503 is always Redis failing, so it doubles as the Redis error count)
 * and a latency histogram, from the first byte of a request to its answer
 * completed (the dashboard's alert streams land in +Inf).
 */
#include "loanwire/prom.h"
#include "loanwire/query.h"
#include "loanwire/version.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

const int64_t lw_query_lat_bounds_us[LW_QUERY_LAT_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, INT64_MAX};

int lw_query_lat_slot(int64_t us)
{
    for (int i = 0; i < LW_QUERY_LAT_BUCKETS - 1; i++)
        if (us <= lw_query_lat_bounds_us[i])
            return i;
    return LW_QUERY_LAT_BUCKETS - 1;
}

char *lw_query_metrics_render(const lw_query_counts_t *counts)
{
    lw_sbuf_t b = {0};
    const char *bi[] = {"version", LW_VERSION, "program", "loanwire-query", NULL};
    const char *name = "loanwire_query_requests_total";
    bool ok = lw_prom_family(&b, "loanwire_build_info", "gauge", "Version of this program.") &&
              lw_prom_u64(&b, "loanwire_build_info", bi, 1) &&
              lw_prom_family(&b, name, "counter",
                             "HTTP requests answered by this loanwire-query, by status code "
                             "(503: Redis failed).");
    for (int i = 0; ok && i < LW_QUERY_STATUS_SLOTS; i++) {
        char code[16];
        snprintf(code, sizeof code, "%d", lw_query_status_codes[i]);
        const char *l[] = {"code", lw_query_status_codes[i] ? code : "other", NULL};
        ok = lw_prom_u64(&b, name, l, counts->by_status[i]);
    }
    name = "loanwire_query_request_duration_seconds";
    ok = ok && lw_prom_family(&b, name, "histogram",
                              "Time from a request's first byte to its answer completed.");
    uint64_t cum = 0;
    for (int i = 0; ok && i < LW_QUERY_LAT_BUCKETS; i++) {
        char le[32];
        cum += counts->lat_bucket[i];
        if (i == LW_QUERY_LAT_BUCKETS - 1)
            snprintf(le, sizeof le, "+Inf");
        else
            snprintf(le, sizeof le, "%g", (double)lw_query_lat_bounds_us[i] / 1e6);
        const char *l[] = {"le", le, NULL};
        ok = lw_prom_u64(&b, "loanwire_query_request_duration_seconds_bucket", l, cum);
    }
    ok = ok &&
         lw_prom_double(&b, "loanwire_query_request_duration_seconds_sum", NULL,
                        (double)counts->lat_sum_us / 1e6) &&
         lw_prom_u64(&b, "loanwire_query_request_duration_seconds_count", NULL, cum);
    if (!ok || !lw_sbuf_reserve(&b, 1)) {
        lw_sbuf_free(&b);
        return NULL;
    }
    b.p[b.len] = '\0';
    return b.p;
}
