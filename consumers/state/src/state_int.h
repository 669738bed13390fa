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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Layout version: first byte of a borrower's state string (consumers/README.md).
 * Version 5 is version 4 and the borrower's recorded inquiries after the
 * window entries (issue 20); a version 4 string is read as having none.
 * Version 4 names the open alerts by rule id (ids of lw:strings); versions 3
 * and 2 held a mask by rule position, read against the pack in force (bit i:
 * rule i); version 2's fence stamp named a partition without its topic and
 * is read as no stamp. Every version read is written back as version 5. */
#define LW_STATE_VERSION    5
#define LW_STATE_VERSION_V4 4
#define LW_STATE_VERSION_V3 3
#define LW_STATE_VERSION_V2 2
/* Open rule ids a state string may hold: the pack's (LW_RULES_MAX) and as
 * many of rules no longer in the pack (dormant, kept as they were). */
#define LW_BSTATE_OPEN_MAX 64
/* Rules a pack may have (the mask's bits 0..31; bit 32 is LW_MASK_HIST):
 * exposure.h's LW_RULES_MAX is held to it. */
#define LW_RULES_MAX_BITS 32
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

/* Bit 32 of the in-memory open-alert mask (bit i: rule i of the bound pack
 * is open): a:{..} holds something, an open alert or a rule's last cleared
 * one. Stored as the low bit of the alerts varint. */
#define LW_MASK_HIST ((uint64_t)1 << 32)

/* ---- Distinct counts in one pass ------------------------------------------ */

/* A set of 64-bit keys (open addressing, linear probing), for counting
 * distinct lenders or platforms in one pass over a borrower's loans or
 * window entries: the pairwise comparison it replaces cost O(n^2) per event
 * and let one borrower with thousands of lenders stall a consumer (issue
 * 21). The table has twice as many slots as keys can come (the caller
 * knows: the number of loans or entries), so it never grows and a probe
 * stays short; up to 32 keys it lives on the stack, beyond it is malloc'd. */
typedef struct lw_kset {
    uint64_t *slot; /* key + 1; 0 is empty */
    size_t mask;
    size_t n;
    uint64_t local[64];
} lw_kset_t;

/* Room for up to `most` keys; false when out of memory. */
static inline bool lw_kset_init(lw_kset_t *k, size_t most)
{
    size_t cap = 8; /* the usual borrower: a few loans, 8 slots to clear */
    while (cap < 2 * most)
        cap <<= 1;
    k->n = 0;
    k->mask = cap - 1;
    if (cap <= 64) {
        k->slot = k->local;
        memset(k->local, 0, cap * sizeof *k->local);
        return true;
    }
    k->slot = calloc(cap, sizeof *k->slot);
    return k->slot != NULL;
}

static inline void lw_kset_free(lw_kset_t *k)
{
    if (k->slot != k->local)
        free(k->slot);
    k->slot = NULL;
}

/* Adds key (below 2^64 - 1); true when it was not there. At most `most`
 * keys (lw_kset_init) may be added. */
static inline bool lw_kset_add(lw_kset_t *k, uint64_t key)
{
    uint64_t v = key + 1;
    size_t i = (size_t)((v * 0x9E3779B97F4A7C15ULL) >> 32) & k->mask;
    while (k->slot[i]) {
        if (k->slot[i] == v)
            return false;
        i = (i + 1) & k->mask;
    }
    k->slot[i] = v;
    k->n++;
    return true;
}

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

/* A recorded inquiry (CreditInquiry) kept for the inquiry figures. */
typedef struct lw_binq {
    int64_t at;
    uint64_t idh;         /* 48 bits of SHA1(inquiry_id): a replay is counted once */
    uint32_t institution; /* string id (dict.c) */
    uint8_t purpose;      /* lw_inquiry_purpose_t */
} lw_binq_t;

typedef struct lw_bstate {
    int64_t t;     /* latest event time */
    uint64_t mask; /* open alerts: bit i = rule i of the bound pack; LW_MASK_HIST */
    /* Open rules by their lw:strings id. Decoded from version 4 and not yet
     * bound: all of them (open_pending); after lw_bstate_bind(): only those
     * of rules not in the pack (dormant), the others moved to mask bits. */
    size_t n_open;
    uint32_t open[LW_BSTATE_OPEN_MAX];
    bool open_pending;
    const uint32_t *rule_ids; /* bound pack: rule i's lw:strings id; NULL unbound */
    size_t n_rules;
    uint32_t fence_writer; /* the last writer's id (lw:strings "@topic:partition"), 0 none */
    int64_t fence_epoch;
    bool has_income;
    int64_t income_fen, income_at;
    size_t n_loans, cap_loans;
    lw_bloan_t *loans;
    size_t n_win, cap_win;
    lw_bwin_t *win;
    size_t n_inq, cap_inq; /* oldest first */
    lw_binq_t *inq;
} lw_bstate_t;

/* Empties s (keeps its arrays). A fresh state is all zeros. */
void lw_bstate_reset(lw_bstate_t *s);
void lw_bstate_free(lw_bstate_t *s);
/* Decodes a state string into s (reset first): LW_OK, LW_ERR_PARSE for a
 * malformed value or another layout version, LW_ERR_NOMEM. */
lw_err_t lw_bstate_decode(lw_bstate_t *s, const void *buf, size_t len);
/* Binds s to a pack: rule_ids[i] is the lw:strings id of rule i (kept by
 * pointer: it must outlive s's use). Open rule ids decoded from version 4
 * become mask bits by id; a version 3/2 mask is already by position of the
 * pack in force, and bits past the pack are dropped (no rule names them). */
void lw_bstate_bind(lw_bstate_t *s, const uint32_t *rule_ids, size_t n_rules);
/* Appends the encoding of s to out (layout version 5): the open rules are
 * the dormant ids and, when bound, the ids of the mask's rules; unbound, a
 * mask bit cannot be named and is not written. */
bool lw_bstate_encode(const lw_bstate_t *s, lw_sbuf_t *out);
/* Room for n loans / n window entries (false: out of memory, s unchanged). */
bool lw_bstate_loans_room(lw_bstate_t *s, size_t n);
bool lw_bstate_win_room(lw_bstate_t *s, size_t n);
bool lw_bstate_inq_room(lw_bstate_t *s, size_t n);

/* Totals and window counts of a decoded state into out (lw_state_read()'s
 * figures; out's loans and alerts untouched). LW_ERR_REDIS with errstr
 * naming `what` when a sum would overflow int64; LW_ERR_NOMEM. */
lw_err_t lw_state_derive(const lw_bstate_t *bs, lw_borrower_state_t *out, const char *what,
                         char *errstr, size_t errstr_size);

/* ---- String ids for platforms, lenders and writers (dict.c) -------------- */

typedef struct lw_dict_s lw_dict_t;

/* One borrower from the replies read for it: r to GET b:{id}, a to HKEYS
 * a:{id} (NULL: open alerts not read, none reported). Names come through d,
 * which keeps them (lw_state_read() passes a fresh one, a reader its own).
 * lw_state_read()'s results; r and a stay the caller's. */
lw_err_t lw_state_from_replies(lw_dict_t *d, lw_rcluster_t *cl, const char *borrower_id,
                               const redisReply *r, const redisReply *a, lw_borrower_state_t *out,
                               bool *found, char *errstr, size_t errstr_size);

/* The hash holding both directions: "n:<name>" -> id and "i:<id>" -> name;
 * field "#" is the last id given. Ids start at 1. */
#define LW_DICT_KEY "lw:strings"

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
