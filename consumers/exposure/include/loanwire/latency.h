/*
 * loanwire/latency.h - a fixed-size log-linear latency histogram
 * (HdrHistogram-like): values are kept exactly below 256 and with < 0.8 %
 * relative error above (128 sub-buckets per power of two), in 58 KiB that
 * never grow, so recording costs no allocation. loanwire-exposure
 * --latency-out uses it for event-to-state times.
 */
#ifndef LOANWIRE_LATENCY_H
#define LOANWIRE_LATENCY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_hist_s lw_hist_t;

lw_hist_t *lw_hist_new(void);
void lw_hist_destroy(lw_hist_t *h); /* NULL is fine */
/* Records one value (negative values count as 0). */
void lw_hist_record(lw_hist_t *h, int64_t v);
uint64_t lw_hist_count(const lw_hist_t *h);
int64_t lw_hist_max(const lw_hist_t *h);
/* The value at percentile q (0 < q <= 100): the smallest recorded bucket's
 * upper bound (capped at the max) such that at least q % of the values are
 * <= it. 0 when empty. */
int64_t lw_hist_percentile(const lw_hist_t *h, double q);
/* {"count":N,"p50_us":..,"p99_us":..,"p999_us":..,"max_us":..} into buf;
 * the length, or -1 if cap is too small. */
int lw_hist_json(const lw_hist_t *h, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_LATENCY_H */
