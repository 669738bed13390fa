/*
 * query_int.h - private parts of loanwire-query shared between its files.
 */
#ifndef LOANWIRE_QUERY_INT_H
#define LOANWIRE_QUERY_INT_H

#include "loanwire/query.h"

#include <openssl/sha.h>

struct lw_tokens_s {
    size_t n;
    unsigned char (*digest)[SHA256_DIGEST_LENGTH];
    char (*institution)[LW_ID_MAX + 1]; /* token i's owner (LW_INSTITUTION_BUREAU alone) */
};

/* ---- Recorded inquiries (inquiry.c) ---------------------------------------- */

/* A record not confirmed by Kafka within this long fails its look-up (503). */
#define LW_INQ_TIMEOUT_MS     5000
#define LW_INQ_TIMEOUT_MS_STR "5000"

typedef struct lw_inq_s lw_inq_t;

/* Called by the delivery thread after the reports of one poll (a batch of
 * records Kafka answered together) had their lw_inq_done_cb, and after a
 * flush; never twice at once. */
typedef void lw_inq_batch_cb(void *opaque);
/* One shared producer of CreditInquiry records to topic (acks=all,
 * idempotent, batched over linger.ms) and its delivery-report thread;
 * batch_end may be NULL. */
lw_inq_t *lw_inq_new(const char *brokers, const char *topic, lw_inq_batch_cb *batch_end,
                     void *batch_opaque, char *errstr, size_t errstr_size);
/* Called once per record, from the delivery thread: LW_OK when Kafka
 * confirmed it, else LW_ERR_TRANSIENT with why (the look-up must not be
 * answered). */
typedef void lw_inq_done_cb(void *opaque, lw_err_t err, const char *why);
/* Sends one look-up's record (a fresh random inquiry id, the time now);
 * cb(opaque, ...) follows once Kafka confirmed it or gave up. Not LW_OK: no
 * record was queued and cb is not called. Thread-safe; concurrent records
 * share batches. */
lw_err_t lw_inq_send(lw_inq_t *r, const char *borrower_id, const char *institution_id,
                     lw_inquiry_purpose_t purpose, lw_inq_done_cb *cb, void *opaque, char *errstr,
                     size_t errstr_size);
/* Waits (up to timeout_ms) until every record sent had its callback, then
 * calls batch_end. */
void lw_inq_flush(lw_inq_t *r, int timeout_ms);
const char *lw_inq_topic(const lw_inq_t *r);
void lw_inq_counts(const lw_inq_t *r, uint64_t *recorded, uint64_t *failed);
void lw_inq_destroy(lw_inq_t *r); /* NULL is fine; delivers what is queued first */

#endif /* LOANWIRE_QUERY_INT_H */
