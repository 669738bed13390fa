/*
 * loanwire/reconcile.h - a platform's snapshot of its open loans against
 * what the bureau holds (loanwire-reconcile).
 *
 * A snapshot is JSON Lines, one open loan per line: platform_id, loan_id,
 * borrower_id, sequence, outstanding_fen. Each loan is compared with the
 * same loan (platform, loan id) in its borrower's state, read through
 * lw_state (loanwire/state.h), and every difference is one JSON line of a
 * kind below. The parts are public so the tests can drive each alone: the
 * line parser, the comparison, and the run that streams a snapshot.
 */
#ifndef LOANWIRE_RECONCILE_H
#define LOANWIRE_RECONCILE_H

#include "loanwire/error.h"
#include "loanwire/event.h"
#include "loanwire/json.h"
#include "loanwire/state.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What one comparison found. LW_RECON_MATCH is no discrepancy. */
typedef enum lw_recon_kind {
    LW_RECON_MATCH = 0,
    LW_RECON_MISSING_AT_BUREAU,   /* unknown to the bureau, or not open there */
    LW_RECON_BALANCE_MISMATCH,    /* same sequence, other outstanding */
    LW_RECON_BUREAU_BEHIND,       /* the bureau's sequence is lower */
    LW_RECON_BUREAU_AHEAD,        /* the snapshot is older than the bureau's state */
    LW_RECON_UNKNOWN_TO_PLATFORM, /* --full: active at the bureau, not in the snapshot */
    LW_RECON__CNT
} lw_recon_kind_t;
/* "missing_at_bureau", ...; "match" for LW_RECON_MATCH; NULL out of range. */
const char *lw_recon_kind_name(lw_recon_kind_t k);

/* ---- Snapshot lines (snapshot.c) ------------------------------------------ */

/* Longest snapshot line read (bytes, without the newline); longer ones are
 * rejected whole, so a line without end costs no memory. */
#define LW_SNAP_LINE_MAX 4096

typedef struct lw_snap_loan {
    char platform_id[LW_ID_MAX + 1];
    char loan_id[LW_ID_MAX + 1];
    char borrower_id[LW_BORROWER_ID_LEN + 1];
    int64_t sequence;        /* 1 .. 2^53-1, as events' */
    int64_t outstanding_fen; /* 0 .. LW_MAX_FEN */
} lw_snap_loan_t;

/*
 * Parses one line (a JSON object, no newline) into *out. platform, when not
 * NULL, is the reconciled platform: a line of another is refused. Every
 * field is required, no other is allowed, amounts and sequences are JSON
 * integers. LW_OK; LW_ERR_PARSE or LW_ERR_VALIDATION with ferr naming the
 * field ("" for the line as a whole) and why.
 */
lw_err_t lw_snap_parse(const char *line, size_t len, const char *platform, lw_snap_loan_t *out,
                       lw_field_error_t *ferr);

/* ---- Comparison (compare.c) ----------------------------------------------- */

/* The loan (platform, loan_id) in a borrower's state, or NULL. */
const lw_loan_state_t *lw_recon_find(const lw_borrower_state_t *st, const char *platform,
                                     const char *loan_id);
/* Open at the bureau: not CLOSED and not WRITTEN_OFF (a PAID line is open). */
bool lw_recon_is_open(const lw_loan_state_t *b);
/* Active at the bureau (what --full looks for): ACTIVE or DELINQUENT. */
bool lw_recon_is_active(const lw_loan_state_t *b);

/*
 * A snapshot loan against the bureau's loan (NULL: the bureau has none):
 *   no loan, or a loan not open at the bureau       -> MISSING_AT_BUREAU
 *   bureau sequence < snapshot's                    -> BUREAU_BEHIND
 *   bureau sequence > snapshot's                    -> BUREAU_AHEAD
 *   same sequence, other outstanding                -> BALANCE_MISMATCH
 *   else                                            -> MATCH
 * Openness first, whatever the sequences ("not open there at any sequence").
 */
lw_recon_kind_t lw_recon_compare(const lw_snap_loan_t *s, const lw_loan_state_t *b);

/*
 * One discrepancy as a JSON line (with '\n') into buf: kind, platform_id,
 * borrower_id, loan_id, "line" (snapshot line number, when s), "platform"
 * ({sequence, outstanding_fen} from the snapshot, or null) and "bureau"
 * ({sequence, outstanding_fen, status, lender_id, updated_at}, or null).
 * NUL-terminated; its length, or -1 when cap is too small (1024 is always
 * enough).
 */
int lw_recon_diff_json(lw_recon_kind_t k, const char *platform, const char *borrower_id,
                       const char *loan_id, const lw_snap_loan_t *s, uint64_t line,
                       const lw_loan_state_t *b, char *buf, size_t cap);

/* ---- A run (run.c) --------------------------------------------------------- */

typedef struct lw_recon_conf {
    const char *redis_url;  /* a single Redis or any node of a cluster */
    const char *platform;   /* P */
    bool full;              /* also look for loans the snapshot lacks (scans the bureau) */
    size_t batch;           /* snapshot loans per pipelined read (default 1000) */
    const char *input;      /* snapshot path; NULL or "-": in */
    FILE *in;               /* stdin unless set */
    FILE *out;              /* discrepancies (default stdout) */
    FILE *err;              /* bad lines and the summary (default stderr) */
    size_t max_line_errors; /* bad lines reported one by one; the rest counted (default 100) */
} lw_recon_conf_t;

void lw_recon_conf_init(lw_recon_conf_t *c);

typedef struct lw_recon_stats {
    uint64_t lines;     /* read, blank ones included */
    uint64_t loans;     /* snapshot loans compared */
    uint64_t rejected;  /* bad lines (and, with --full, repeated loans) */
    uint64_t borrowers; /* borrower states read while streaming */
    uint64_t scanned;   /* --full: borrower keys scanned at the bureau */
    int masters;        /* --full: nodes scanned */
    size_t set_bytes;   /* --full: memory of the snapshot's loan set */
    uint64_t kinds[LW_RECON__CNT];
    uint64_t discrepancies;
    double seconds;
} lw_recon_stats_t;

/*
 * Streams the snapshot, reads the borrowers of each batch in one pipelined
 * call, writes each discrepancy; with full, scans the bureau's borrowers for
 * loans of the platform the snapshot lacks. SIGINT/SIGTERM (lw_stop_requested,
 * loanwire/log.h) end it between batches: LW_ERR_TRANSIENT, "interrupted"
 * (the reconciliation is incomplete). LW_OK when the whole
 * snapshot was compared, bad lines included (stats->rejected counts them);
 * LW_ERR_IO (snapshot or output), LW_ERR_REDIS, LW_ERR_NOMEM, LW_ERR_CONFIG
 * with errstr. stats is filled in every case, for the summary.
 */
lw_err_t lw_recon_run(const lw_recon_conf_t *conf, lw_recon_stats_t *stats, char *errstr,
                      size_t errstr_size);

/* The summary lines for stderr. */
void lw_recon_summary(const lw_recon_conf_t *conf, const lw_recon_stats_t *st, FILE *fp);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_RECONCILE_H */
