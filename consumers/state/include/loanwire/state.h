/*
 * loanwire/state.h - a borrower's exposure as the bureau keeps it in Redis.
 *
 * loanwire-exposure writes this state (consumers/README.md documents the key
 * layout); loanwire-query and the tests read it through lw_state_read(), so
 * the layout has one owner and one reader. Figures are int64_t fen.
 *
 * The reader takes an lw_rcluster_t (loanwire/rcluster.h), made from the URL
 * of a single Redis or of any node of a Redis Cluster: the client detects
 * which, so there is one code path for both and no caller branches.
 */
#ifndef LOANWIRE_STATE_H
#define LOANWIRE_STATE_H

#include "loanwire/error.h"
#include "loanwire/event.h"
#include "loanwire/rcluster.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lw_loan_status {
    LW_LOAN_ACTIVE = 0, /* outstanding > 0, not closed */
    LW_LOAN_PAID,       /* outstanding 0, not closed (a line with nothing drawn) */
    LW_LOAN_DELINQUENT, /* active and days_past_due > 0 */
    LW_LOAN_WRITTEN_OFF,
    LW_LOAN_CLOSED,
    LW_LOAN_STATUS__CNT
} lw_loan_status_t;
const char *lw_loan_status_name(lw_loan_status_t s);

typedef struct lw_loan_state {
    char platform_id[LW_ID_MAX + 1];
    char loan_id[LW_ID_MAX + 1];
    char lender_id[LW_ID_MAX + 1];
    lw_product_t product;
    lw_loan_status_t status;
    int64_t sequence; /* last applied */
    int64_t outstanding_fen;
    int64_t credit_limit_fen;
    int32_t days_past_due;
    int64_t past_due_fen;
    int64_t updated_at; /* occurred_at of the last applied event */
} lw_loan_state_t;

/* Window lengths the state keeps counts for (event time). */
#define LW_WINDOW_24H (24LL * 3600 * 1000)
#define LW_WINDOW_7D  (7LL * 24 * 3600 * 1000)
#define LW_WINDOW_30D (30LL * 24 * 3600 * 1000)
#define LW_WINDOW_90D (90LL * 24 * 3600 * 1000)
typedef enum { LW_WIN_24H = 0, LW_WIN_7D, LW_WIN_30D, LW_WIN__CNT } lw_window_t;

/* One recorded inquiry, as the exposure shows it (issue 20). */
typedef struct lw_inquiry_state {
    char institution_id[LW_ID_MAX + 1];
    lw_inquiry_purpose_t purpose;
    int64_t inquired_at;
} lw_inquiry_state_t;

/* The last inquiries the exposure shows, newest first. */
#define LW_STATE_INQUIRIES_SHOWN 20

typedef struct lw_borrower_state {
    char borrower_id[LW_BORROWER_ID_LEN + 1];
    int64_t total_outstanding_fen;
    int32_t active_loans;
    int32_t active_lenders;
    int32_t active_platforms;
    int64_t past_due_fen;
    bool has_annual_income;
    int64_t annual_income_fen;
    int64_t last_event_at; /* as_of */
    /* Counted as of last_event_at, by event time. */
    int32_t new_loans[LW_WIN__CNT];
    int32_t applications[LW_WIN__CNT];
    int32_t distinct_lenders[LW_WIN__CNT]; /* of new loans + applications */
    size_t n_loans;
    lw_loan_state_t *loans; /* n_loans entries, every loan ever seen */
    size_t n_open_alerts;
    char (*open_alerts)[LW_ID_MAX + 1]; /* rule ids fired and not yet cleared, sorted */
    /* Recorded inquiries as of last_event_at: approval purposes only are
     * counted (loan approval, credit-card approval, guarantee review). */
    int32_t inquiries_30d, inquiries_90d, inquiry_institutions_30d;
    size_t n_inquiries; /* shown: the last LW_STATE_INQUIRIES_SHOWN of every purpose */
    lw_inquiry_state_t inquiries[LW_STATE_INQUIRIES_SHOWN];
} lw_borrower_state_t;

/*
 * Reads one borrower: GET b:{id} and HKEYS a:{id} as one group on the
 * borrower's slot (one round trip), then one HMGET of lw:strings, routed to
 * that key's own slot, for the platform and lender names. LW_OK and *out
 * filled (free with lw_borrower_state_clear); LW_ERR_INVALID_ARG when the id
 * is malformed; LW_ERR_REDIS with errstr when Redis fails (after lw_rcluster's
 * redirects and retries). *found is false (and out empty) for an unknown
 * borrower. cl is used by this thread only for the call.
 */
lw_err_t lw_state_read(lw_rcluster_t *cl, const char *borrower_id, lw_borrower_state_t *out,
                       bool *found, char *errstr, size_t errstr_size);
void lw_borrower_state_clear(lw_borrower_state_t *st);

/*
 * Many borrowers per round trip, for tools that walk thousands of them
 * (loanwire-reconcile). A reader keeps the names of lw:strings it has
 * learnt (an id names one platform or lender for good), so after the first
 * batches a read costs no HMGET; lw_state_read() starts afresh each call.
 * flags: LW_STATE_READ_NO_ALERTS skips the open-alert hash (n_open_alerts
 * stays 0), half the commands for a caller that needs only the loans.
 */
typedef struct lw_state_reader lw_state_reader_t;
#define LW_STATE_READ_NO_ALERTS 1u
lw_state_reader_t *lw_state_reader_new(lw_rcluster_t *cl, unsigned flags);
void lw_state_reader_destroy(lw_state_reader_t *r); /* NULL is fine */
/*
 * Reads ids[0..n-1] as lw_state_read() reads one: a group per borrower on
 * its slot, every group written (grouped per master by lw_rcluster) before
 * any reply is read. out[i] and found[i] as lw_state_read()'s; on any error
 * every out[i] is left empty and the error is lw_state_read()'s (an invalid
 * id: LW_ERR_INVALID_ARG naming it). Free each out[i] with
 * lw_borrower_state_clear().
 */
lw_err_t lw_state_read_many(lw_state_reader_t *r, const char *const *ids, size_t n,
                            lw_borrower_state_t *out, bool *found, char *errstr,
                            size_t errstr_size);

/* Key of a borrower's packed state string: "b:{<id>}" (buf >= LW_STATE_KEY_MAX). */
#define LW_STATE_KEY_MAX 40
void lw_state_key(const char *borrower_id, char *buf, size_t cap);
/* Key of a borrower's open-alert hash (rule id -> alert JSON): "a:{<id>}". */
void lw_alerts_key(const char *borrower_id, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_STATE_H */
