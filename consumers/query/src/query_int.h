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

/* One shared producer of CreditInquiry records to topic (acks=all,
 * idempotent, batched over linger.ms) and its delivery-report thread. */
lw_inq_t *lw_inq_new(const char *brokers, const char *topic, char *errstr, size_t errstr_size);
/* Records one look-up and waits for Kafka's confirmation: LW_OK (inquiry_id
 * filled), else LW_ERR_TRANSIENT with errstr (the look-up must not be
 * answered). Thread-safe; concurrent calls share batches. */
lw_err_t lw_inq_record(lw_inq_t *r, const char *borrower_id, const char *institution_id,
                       lw_inquiry_purpose_t purpose, char inquiry_id[33], char *errstr,
                       size_t errstr_size);
const char *lw_inq_topic(const lw_inq_t *r);
void lw_inq_counts(const lw_inq_t *r, uint64_t *recorded, uint64_t *failed);
void lw_inq_destroy(lw_inq_t *r); /* NULL is fine; delivers what is queued first */

#endif /* LOANWIRE_QUERY_INT_H */
