/*
 * gen.h - the synthetic loan-event feed behind loanwire-gen.
 *
 * A small discrete-event simulation of the Chinese online consumer-credit
 * market: platforms (Alipay, WeBank, JD, ...) with their revolving and
 * instalment products, partner banks that fund the loans, borrowers who
 * apply, draw, repay, fall behind, cure or get written off, and a share of
 * over-borrowers who stack loans across lenders, borrow beyond their income
 * or borrow while past due. Events come out in event-time order; the feed is
 * a pure function of the configuration (same conf, same seed: same events,
 * byte for byte), so it serves as a benchmark source and a test fixture.
 *
 *   lw_gen_conf_t conf;
 *   lw_gen_conf_init(&conf);
 *   conf.seed = 7;
 *   lw_gen_t *g = lw_gen_new(&conf, errstr, sizeof errstr);
 *   lw_event_t ev;
 *   while (lw_gen_next(g, &ev))
 *       ...;
 *   lw_gen_destroy(g);
 */
#ifndef LOANWIRE_GEN_H
#define LOANWIRE_GEN_H

#include "loanwire/error.h"
#include "loanwire/event.h"
#include "loanwire/id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_GEN_MAX_PLATFORMS 64
#define LW_GEN_MAX_BORROWERS 50000000u
#define LW_GEN_DEFAULT_START 1767225600000LL /* 2026-01-01T00:00:00Z */

typedef struct lw_gen_s lw_gen_t;

typedef struct lw_gen_conf {
    uint64_t seed;
    uint32_t borrowers;         /* population size, >= 1 */
    uint32_t platforms;         /* 1..LW_GEN_MAX_PLATFORMS; the first 10 are real ones */
    uint32_t over_borrowers_bp; /* share of over-borrowers in basis points (300 = 3%) */
    uint64_t max_events;        /* lw_gen_next() ends after this many; 0 = never */
    int64_t start_ms;           /* simulated clock start, ms since the epoch */
    int64_t ramp_ms;            /* ordinary borrowers first apply within this span */
    const lw_id_key_t *id_key;  /* borrowed; NULL = the built-in demo key */
} lw_gen_conf_t;

/* Over-borrower kinds, in the order they are dealt out. */
typedef enum lw_gen_kind {
    LW_GEN_NORMAL = 0,
    LW_GEN_STACKER,    /* >= 5 applications across >= 4 lenders within days */
    LW_GEN_INCOME,     /* borrows beyond a third of a (low) declared income */
    LW_GEN_BIG,        /* borrows beyond RMB 300,000 in total */
    LW_GEN_DELINQUENT, /* draws a new loan while another is past due */
    LW_GEN_KIND__CNT
} lw_gen_kind_t;

typedef struct lw_gen_stats {
    uint64_t events;
    uint64_t by_type[LW_EVENT__CNT];
    uint64_t borrowers;                        /* borrowers that have appeared in the feed so far */
    uint64_t over_borrowers[LW_GEN_KIND__CNT]; /* of them, by kind ([0]: ordinary) */
    int64_t sim_now_ms;                        /* event time of the last event */
} lw_gen_stats_t;

/* Defaults: seed 1, 10,000 borrowers, 10 platforms, 3% over-borrowers, no
 * event bound, start 2026-01-01T00:00:00Z, ramp 30 days, demo key. */
void lw_gen_conf_init(lw_gen_conf_t *conf);

/* NULL on bad configuration or no memory, with errstr set. */
lw_gen_t *lw_gen_new(const lw_gen_conf_t *conf, char *errstr, size_t errstr_size);
void lw_gen_destroy(lw_gen_t *g); /* NULL is fine */

/* Fills *out with the next event; false once max_events were produced (or on
 * an internal failure, which lw_gen_error() then describes). */
bool lw_gen_next(lw_gen_t *g, lw_event_t *out);
const char *lw_gen_error(const lw_gen_t *g); /* "" when none */

void lw_gen_stats(const lw_gen_t *g, lw_gen_stats_t *out);
const char *lw_gen_kind_name(lw_gen_kind_t k);
/* Id of the i-th platform in the built-in table (or a synthetic one). */
const char *lw_gen_platform_name(const lw_gen_t *g, uint32_t i);

/* Parses "2026-01-01", "2026-01-01T08:30:00Z", "...:00.250Z" or integer
 * milliseconds since the epoch. */
lw_err_t lw_gen_parse_time(const char *s, int64_t *ms_out);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_GEN_H */
