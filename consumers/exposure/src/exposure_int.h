/*
 * exposure_int.h - private struct bodies and helpers of lw_exposure.
 *
 * The consumer owns the rules: a borrower's state string is read with GET,
 * decoded into an lw_bstate_t, changed by lw_bstate_apply() (the sequence
 * rule, the windows, every rule) and written back by a small fenced script
 * (write.lua). Redis only stores; it runs no rule. consumers/README.md
 * documents the byte layout.
 */
#ifndef LOANWIRE_EXPOSURE_INT_H
#define LOANWIRE_EXPOSURE_INT_H

#include "loanwire/exposure.h"
#include "state_int.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

/* Rule windows run from 1 ms to 90 days (issue 20). Window entries are kept
 * behind the borrower's latest event as long as the pack's longest window
 * needs, and at least the 30 days the readers report (lw_state_read()'s
 * 24h/7d/30d counts): a pack with windows up to 30 days pays nothing for
 * the longer range (lw_rules_keep_ms()). */
#define LW_WINDOW_MAX_MS      (90LL * 24 * 3600 * 1000)
#define LW_WINDOW_MIN_KEEP_MS LW_WINDOW_30D
/* Inquiries are kept at least the 90 days readers report (inquiries_90d). */
#define LW_INQ_MIN_KEEP_MS LW_WINDOW_90D
_Static_assert(LW_RULES_MAX <= LW_RULES_MAX_BITS, "a rule's open flag is a bit below LW_MASK_HIST");

struct lw_rules_s {
    size_t n;
    lw_rule_t rules[LW_RULES_MAX];
    size_t max_loans, max_window;                /* limits per borrower (lw_rules_set_limits) */
    int64_t retain_ended_ms, retain_negative_ms; /* retention.c; 0: default */
    int64_t keep_ms;                             /* window entries kept this long (rules_keep()) */
    size_t max_inquiries;                        /* inquiries kept per borrower */
    int64_t inq_keep_ms;                         /* inquiries kept this long (rules_keep()) */
};

/* Room for one alert's JSON: its strings escaped at worst 6 bytes a byte. */
#define LW_ALERT_JSON_MAX 4096

/* Alerts built by the rules, one struct each, appended as they fire. */
typedef struct lw_alert_vec {
    lw_alert_t *v;
    size_t n, cap;
} lw_alert_vec_t;

/* What one event did beyond its code: the rules that fired (their alerts
 * appended to the caller's vector, in this order) and the rules it cleared,
 * in rule order. */
typedef struct lw_bapply_out {
    bool changed;                     /* the state must be written */
    bool nomem;                       /* out of memory: the state is unusable */
    char reason[LW_APPLY_REASON_MAX]; /* LW_APPLY_REFUSED: why (the state is unchanged) */
    size_t n_fired, n_cleared;
    int fired[LW_RULES_MAX]; /* rule index */
    int cleared[LW_RULES_MAX];
} lw_bapply_out_t;

/* Applies one valid event to its borrower's state (event time only): the
 * sequence rule, the 30-day window, then every rule on the new state. An
 * event that would take the borrower past a limit of the pack, or make a
 * total overflow int64, is LW_APPLY_REFUSED with out->reason, the state left
 * as it was. Cost: linear in the borrower's loans and window entries (each
 * distinct count is one pass through a hash set), bounded by the limits. platform
 * and lender are the event's string ids. Fired alerts are appended to
 * alerts. writer is the id of the event's (topic, partition) (lw_store_writer_name());
 * returns LW_APPLY_FENCED when the state carries a newer epoch of the same
 * writer (nothing changed; s->fence_epoch says which). */
lw_apply_code_t lw_bstate_apply(lw_bstate_t *s, const lw_rules_t *rules, const lw_event_t *ev,
                                uint32_t platform, uint32_t lender, uint32_t writer, int64_t epoch,
                                lw_alert_vec_t *alerts, lw_bapply_out_t *out);
/* Retention (retention.c), called by lw_bstate_apply(): lw_retain_stale()
 * says an event at `at` for a loan the state does not hold is older than the
 * settled period behind s->t (it may be a pruned loan's: refused);
 * lw_retain_prune() drops the ended loans past their period behind s->t and
 * says whether it dropped any. */
bool lw_retain_stale(const lw_bstate_t *s, const lw_rules_t *rules, int64_t at);
bool lw_retain_prune(lw_bstate_t *s, const lw_rules_t *rules);

/* Applies one recorded inquiry (CreditInquiry) to its borrower's state: kept
 * (oldest first, at most the pack's max_inquiries within its keep time,
 * else LW_APPLY_REFUSED), counted once by its id (LW_APPLY_DUPLICATE for a
 * replay), then the inquiry_spree rules. institution is the string id of
 * its institution; writer and epoch fence it as lw_bstate_apply() does
 * (the writer of the loan-event partition it belongs with). */
lw_apply_code_t lw_bstate_inquiry(lw_bstate_t *s, const lw_rules_t *rules, const lw_inquiry_t *iq,
                                  uint32_t institution, uint32_t writer, int64_t epoch,
                                  lw_alert_vec_t *alerts, lw_bapply_out_t *out);
/* alert_id = first 32 hex digits of SHA1(borrower|rule|event_id). */
void lw_alert_id(const char *borrower_id, const char *rule_id, const char *event_id, char out[33]);

/* A writer's name in lw:strings, "@<topic>:<partition>" ('@' is not in the
 * Kafka topic alphabet): its id is the writer in a borrower's fence stamp. */
#define LW_WRITER_NAME_MAX 272
void lw_writer_name(const char *topic, int32_t partition, char *buf, size_t cap);

/* ---- Store --------------------------------------------------------------- */

/* The embedded write.lua (generated from src/write.lua at build time). */
extern const char lw_write_lua[];

/* Every command the store sends is also written to tap (RESP), for
 * loanwire-exposure-bench --dump; NULL stops. */
void lw_store_set_tap(lw_store_t *st, FILE *tap);

#endif
