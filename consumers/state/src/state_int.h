/*
 * state_int.h - private to the readers and the writer of borrower state:
 * the decoded state string (bstate.c), the shared string ids (dict.c) and
 * the key spellings. loanwire-exposure writes through it, lw_state_read()
 * and the tests read through it; loanwire-query links only lw_state.
 */
#ifndef LOANWIRE_STATE_INT_H
#define LOANWIRE_STATE_INT_H

#include "loanwire/buf.h"
#include "loanwire/rcluster.h"
#include "loanwire/state.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

/* Layout version: first byte of a borrower's state string (consumers/README.md).
 * Version 2 (the fence stamp named a partition, without its topic) is still
 * read, as a state with no fence stamp; it is written as version 3. */
#define LW_STATE_VERSION    3
#define LW_STATE_VERSION_V2 2
/* Numbers and times a state string holds are below 2^53 (what validation
 * lets through, and what JSON readers with doubles read exactly). */
#define LW_STATE_NUM_MAX ((int64_t)1 << 53)

/* A borrower's key, "b:{<id>}" or "a:{<id>}", into buf (at least
 * LW_STATE_KEY_MAX bytes); its length. lw_state_key() and the store's RESP
 * both use it, so the layout has one spelling. */
static inline size_t lw_borrower_key(char prefix, const char *bid, char *buf)
{
    size_t n = strnlen(bid, LW_BORROWER_ID_LEN);
    buf[0] = prefix;
    buf[1] = ':';
    buf[2] = '{';
    memcpy(buf + 3, bid, n);
    buf[3 + n] = '}';
    buf[4 + n] = '\0';
    return n + 4;
}

/* Bit 32 of the open-alert mask (bit i: rule i is open): a:{..} holds
 * something, an open alert or a rule's last cleared one. */
#define LW_MASK_HIST ((uint64_t)1 << 32)

/* ---- A borrower's state, decoded (bstate.c) ------------------------------- */

typedef struct lw_bloan {
    uint32_t platform, lender; /* string ids (dict.c) */
    char loan_id[LW_ID_MAX + 1];
    lw_product_t product;
    lw_loan_status_t status;
    int32_t days_past_due;
    int64_t sequence, outstanding_fen, past_due_fen, credit_limit_fen;
    int64_t updated_at;
} lw_bloan_t;

/* A new loan or an application counted in the windows. */
typedef struct lw_bwin {
    int64_t at;
    uint64_t idh; /* 48 bits of SHA1("platform:loan"); lowest bit 1 for an application */
    uint32_t lh;  /* 32 bits of SHA1(lender_id) */
} lw_bwin_t;

typedef struct lw_bstate {
    int64_t t;             /* latest event time */
    uint64_t mask;         /* open alerts: bit i = rule i; LW_MASK_HIST */
    uint32_t fence_writer; /* the last writer's id (lw:strings "@topic:partition"), 0 none */
    int64_t fence_epoch;
    bool has_income;
    int64_t income_fen, income_at;
    size_t n_loans, cap_loans;
    lw_bloan_t *loans;
    size_t n_win, cap_win;
    lw_bwin_t *win;
} lw_bstate_t;

/* Empties s (keeps its arrays). A fresh state is all zeros. */
void lw_bstate_reset(lw_bstate_t *s);
void lw_bstate_free(lw_bstate_t *s);
/* Decodes a state string into s (reset first): LW_OK, LW_ERR_PARSE for a
 * malformed value or another layout version, LW_ERR_NOMEM. */
lw_err_t lw_bstate_decode(lw_bstate_t *s, const void *buf, size_t len);
/* Appends the encoding of s to out. */
bool lw_bstate_encode(const lw_bstate_t *s, lw_sbuf_t *out);
/* Room for n loans / n window entries (false: out of memory, s unchanged). */
bool lw_bstate_loans_room(lw_bstate_t *s, size_t n);
bool lw_bstate_win_room(lw_bstate_t *s, size_t n);

/* ---- String ids for platforms, lenders and writers (dict.c) -------------- */

/* The hash holding both directions: "n:<name>" -> id and "i:<id>" -> name;
 * field "#" is the last id given. Ids start at 1. */
#define LW_DICT_KEY "lw:strings"

typedef struct lw_dict_s lw_dict_t;
lw_dict_t *lw_dict_new(void);
void lw_dict_destroy(lw_dict_t *d); /* NULL is fine */
void lw_dict_clear(lw_dict_t *d);
uint32_t lw_dict_id(const lw_dict_t *d, const char *name); /* 0: not known here */
const char *lw_dict_name(const lw_dict_t *d, uint32_t id); /* NULL: not known here */
/* Gives every name an id (one atomic script call per name not known here,
 * pipelined). LW_ERR_TRANSIENT when the connection failed. */
lw_err_t lw_dict_intern(lw_dict_t *d, redisContext *rc, const char *const *names, size_t n,
                        FILE *tap, char *errstr, size_t errstr_size);
/* Learns the names of ids not known here: one HMGET, routed to the slot of
 * LW_DICT_KEY (a single Redis or any cluster node's handle). */
lw_err_t lw_dict_resolve(lw_dict_t *d, lw_rcluster_t *cl, const uint32_t *ids, size_t n,
                         char *errstr, size_t errstr_size);

#endif
