/*
 * latency.c - the log-linear histogram of loanwire/latency.h.
 *
 * Bucket layout: values 0..255 have a bucket each; above, a value with its
 * highest bit at position b (b >= 8) falls in one of 128 equal sub-buckets
 * of [2^b, 2^(b+1)), each 2^(b-7) wide. A value is reported as its bucket's
 * upper bound, so percentiles err high by less than 1/128.
 */
#include "loanwire/latency.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define SUB     128
#define LINEAR  256
#define NBUCKET (LINEAR + (63 - 8 + 1) * SUB)

struct lw_hist_s {
    uint64_t count;
    int64_t max;
    uint64_t b[NBUCKET];
};

static int msb(uint64_t v)
{
    return 63 - __builtin_clzll(v);
}

static size_t index_of(uint64_t v)
{
    if (v < LINEAR)
        return (size_t)v;
    int shift = msb(v) - 7; /* v >> shift is in [128, 256) */
    return LINEAR + (size_t)(shift - 1) * SUB + (size_t)((v >> shift) - SUB);
}

static int64_t upper_of(size_t i)
{
    if (i < LINEAR)
        return (int64_t)i;
    size_t shift = (i - LINEAR) / SUB + 1;
    uint64_t sub = (i - LINEAR) % SUB + SUB;
    uint64_t hi = ((sub + 1) << shift) - 1;
    return hi > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)hi;
}

lw_hist_t *lw_hist_new(void)
{
    return calloc(1, sizeof(lw_hist_t));
}

void lw_hist_destroy(lw_hist_t *h)
{
    free(h);
}

void lw_hist_record(lw_hist_t *h, int64_t v)
{
    if (v < 0)
        v = 0;
    h->b[index_of((uint64_t)v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
}

uint64_t lw_hist_count(const lw_hist_t *h)
{
    return h->count;
}

int64_t lw_hist_max(const lw_hist_t *h)
{
    return h->max;
}

int64_t lw_hist_percentile(const lw_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q >= 100.0)
        return h->max;
    double r = q / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r || rank == 0)
        rank++;
    uint64_t seen = 0;
    for (size_t i = 0; i < NBUCKET; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            int64_t u = upper_of(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

int lw_hist_json(const lw_hist_t *h, char *buf, size_t cap)
{
    int n = snprintf(buf, cap,
                     "{\"count\":%" PRIu64 ",\"p50_us\":%" PRId64 ",\"p99_us\":%" PRId64
                     ",\"p999_us\":%" PRId64 ",\"max_us\":%" PRId64 "}",
                     h->count, lw_hist_percentile(h, 50), lw_hist_percentile(h, 99),
                     lw_hist_percentile(h, 99.9), h->max);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}
