/*
 * obs_int.h - loanwire-exposure's figures for its own /metrics, /healthz and
 * /readyz (obs.c), and the HTTP server that serves them (metrics_http.c).
 *
 * The consumer loop owns the counters and writes them here (relaxed atomic
 * stores, once per loop turn); the HTTP thread only reads. Nothing here is
 * ever reset, so every counter is monotonic for the life of the process, as
 * Prometheus's rate() expects.
 */
#ifndef LOANWIRE_EXPOSURE_OBS_INT_H
#define LOANWIRE_EXPOSURE_OBS_INT_H

#include "loanwire/buf.h"
#include "loanwire/exposure.h"

#include <stdbool.h>
#include <stdint.h>

#define LW_OBS_MAX_PARTS 4096

/* What the consumer counts (consumer.c's own counters are of this type). */
typedef struct lw_obs_counts {
    uint64_t consumed, applied, duplicates, out_of_order, fenced, dead_letters, alerts;
    /* recorded inquiries: counted apart, so the figures above stay the loan
     * events' (consumed = produced, applied + duplicates + ... = consumed) */
    uint64_t inq_consumed, inq_applied, inq_duplicates;
    uint64_t refused; /* LW_APPLY_REFUSED: also counted in dead_letters */
    uint64_t alerts_by_rule[LW_RULES_MAX];
    uint64_t batches, produce_failed;
} lw_obs_counts_t;

typedef struct lw_obs lw_obs_t;

lw_obs_t *lw_obs_new(const char *topic, const lw_rules_t *rules);
void lw_obs_destroy(lw_obs_t *o);

/* Writer side (the consumer loop). */
void lw_obs_counts(lw_obs_t *o, const lw_obs_counts_t *c); /* also "the loop is alive" */
/* lag < 0: unknown; owned false: not ours (its lag series disappears). */
void lw_obs_partition(lw_obs_t *o, int32_t p, bool owned, int64_t lag);
void lw_obs_gauges(lw_obs_t *o, int fenced, int64_t stalled_ms, int64_t redis_rtt_us,
                   bool redis_ok);
/* librdkafka's statistics JSON (stats_cb), kept as the latest per client. */
void lw_obs_rdkafka_stats(lw_obs_t *o, bool producer, const char *json, size_t len);

/* Reader side (any thread). */
bool lw_obs_render(lw_obs_t *o, lw_sbuf_t *b);
/* true when ready / healthy; otherwise why says why. */
bool lw_obs_ready(lw_obs_t *o, char *why, size_t why_size);
bool lw_obs_healthy(lw_obs_t *o, char *why, size_t why_size);

/* /metrics, /healthz, /readyz on HOST:PORT (port 0: any, see _port). */
typedef struct lw_mhttp lw_mhttp_t;
lw_mhttp_t *lw_mhttp_start(const char *listen, lw_obs_t *o, char *errstr, size_t errstr_size);
int lw_mhttp_port(const lw_mhttp_t *h);
void lw_mhttp_stop(lw_mhttp_t *h);

#endif /* LOANWIRE_EXPOSURE_OBS_INT_H */
