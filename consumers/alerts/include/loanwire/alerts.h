/*
 * loanwire/alerts.h - loanwire-alerts, the risk teams' subscription to
 * over-indebtedness alerts.
 *
 * Two sources carry the same alerts: the Kafka topic loanwire.alerts (Avro,
 * keyed by borrower; a consumer group keeps the position) and the Redis
 * stream lw:alerts (a stream consumer group, XREADGROUP + XACK). Either way
 * an alert is acknowledged (offset stored / XACK) only after it was printed
 * and stdout flushed, so a restart resumes with neither gaps nor repeats;
 * repeats of one alert_id within a run (Kafka redelivery) are dropped.
 *
 * The filter, de-duplication and line formatting are exported so the unit
 * tests reach them without servers.
 */
#ifndef LOANWIRE_ALERTS_H
#define LOANWIRE_ALERTS_H

#include "loanwire/error.h"
#include "loanwire/event.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Filter -------------------------------------------------------------- */

typedef enum lw_alerts_field {
    LW_ALERTS_F_RULE = 0,
    LW_ALERTS_F_PLATFORM, /* trigger_platform_id */
    LW_ALERTS_F_LENDER,   /* trigger_lender_id */
    LW_ALERTS_F_BORROWER,
    LW_ALERTS_F__CNT
} lw_alerts_field_t;

typedef struct lw_alerts_filter_s lw_alerts_filter_t;

lw_alerts_filter_t *lw_alerts_filter_new(void);
void lw_alerts_filter_destroy(lw_alerts_filter_t *f); /* NULL is fine */
/* Adds the values of a comma list ("a,b"); repeated calls add more. Within a
 * field values are alternatives (OR); different fields must all match (AND).
 * Empty items and over-long values are errors. */
lw_err_t lw_alerts_filter_add(lw_alerts_filter_t *f, lw_alerts_field_t field, const char *list,
                              char *errstr, size_t errstr_size);
/* "WARNING" (or "warning"): that severity or higher. "=WARNING": exactly it. */
lw_err_t lw_alerts_filter_severity(lw_alerts_filter_t *f, const char *spec, char *errstr,
                                   size_t errstr_size);
bool lw_alerts_filter_match(const lw_alerts_filter_t *f, const lw_alert_t *al);

/* ---- Repeats ------------------------------------------------------------- */

/* The alert_ids printed in this run: a bounded set that forgets the oldest
 * once full (redeliveries arrive close to the original). */
typedef struct lw_alerts_seen_s lw_alerts_seen_t;
lw_alerts_seen_t *lw_alerts_seen_new(size_t capacity);
/* True when id is new (and remembers it); false for a repeat. */
bool lw_alerts_seen_add(lw_alerts_seen_t *s, const char *id);
/* True when id was printed in this run (remembers nothing). */
bool lw_alerts_seen_has(const lw_alerts_seen_t *s, const char *id);
void lw_alerts_seen_destroy(lw_alerts_seen_t *s); /* NULL is fine */

/* ---- Output -------------------------------------------------------------- */

/* One aligned, human-readable line (no newline): time (UTC, event time),
 * severity, rule, borrower, outstanding in yuan, loans, lenders, window
 * count, reason. Returns the length (truncated to cap-1 if need be). The
 * strings are escaped with lw_alerts_text_escape(). */
int lw_alert_format_line(const lw_alert_t *al, char *buf, size_t cap);

/* Copies in to out (cap bytes, always terminated) for a terminal: C0
 * controls, DEL and bytes that are not UTF-8 become \xNN, the C1 controls
 * U+0080..U+009F become \uNNNN, a backslash becomes \\; valid UTF-8 text
 * stays as it is. Stops before an escape or character that would not fit.
 * Returns the length written. */
size_t lw_alerts_text_escape(const char *in, char *out, size_t cap);

/* Fen as yuan text: -123456 -> "-1,234.56". */
void lw_fen_format(int64_t fen, char *buf, size_t cap);

/* ---- Running ------------------------------------------------------------- */

typedef enum lw_alerts_source { LW_ALERTS_KAFKA = 0, LW_ALERTS_REDIS } lw_alerts_source_t;

typedef struct lw_alerts_conf {
    lw_alerts_source_t source;
    const char *brokers;
    const char *topic;
    const char *group;
    const char *consumer; /* Redis stream consumer name */
    const char *redis_url;
    const char *const *kafka_props; /* -X key=value, NULL-terminated or NULL */
    const char *kafka_conf_file;    /* -F file or NULL */
    bool follow;
    bool from_beginning;
    uint64_t count; /* 0: no limit */
    bool json;
    const lw_alerts_filter_t *filter;
} lw_alerts_conf_t;

void lw_alerts_conf_init(lw_alerts_conf_t *conf);

/*
 * Prints matching alerts to out until caught up (or forever with follow),
 * count reached, or lw_stop_requested(). *printed counts printed alerts.
 * LW_OK on a clean end; an error with errstr otherwise.
 */
lw_err_t lw_alerts_run(const lw_alerts_conf_t *conf, FILE *out, uint64_t *printed, char *errstr,
                       size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_ALERTS_H */
