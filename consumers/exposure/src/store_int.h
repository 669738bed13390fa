/*
 * store_int.h - the store's private types, shared by its files:
 *
 *   store.c          the handle: connections, accessors, epochs
 *   flush.c          the flush life cycle (append, begin, commit, end): which
 *                    step runs when, the retry of refused borrowers
 *   batch.c          the borrowers of a flush: names, grouping, states read,
 *                    events applied, write.lua calls built, their answers
 *   store_single.c   a flush's reads and writes on one Redis (strict fencing:
 *                    WATCH, the MULTI streamed while applying, EXEC)
 *   store_cluster.c  the same reads and writes routed by hash slot over a
 *                    Redis Cluster (lw_rcluster)
 *   resp.c           commands built as RESP
 *
 * A flush on one Redis talks over its own redisContext (rc); on a cluster over
 * its own lw_rcluster_t handle (cl), since one handle carries one batch at a
 * time and two flushes are in the pipeline.
 */
#ifndef LOANWIRE_STORE_INT_H
#define LOANWIRE_STORE_INT_H

#include "exposure_int.h"

#include "loanwire/conf.h"
#include "loanwire/rcluster.h"

#include <stdint.h>

#define NONE SIZE_MAX

/* One queued event or recorded inquiry. The caller's struct is referenced,
 * not copied: it keeps it until the flush ends (a consumer's batch holds its
 * decoded events anyway), and a 376-byte copy per event was ~90 MB of peak
 * heap at 100,000-event batches. */
typedef struct pending_ev {
    const lw_event_t *ev;   /* lw_store_append()'s; NULL for an inquiry */
    const lw_inquiry_t *iq; /* lw_store_append_inquiry()'s; NULL for an event */
    const char *topic;
    int32_t partition;
    int64_t epoch;
    uint32_t writer;           /* id of "@topic:partition", its fence stamp */
    size_t slot;               /* its borrower in slots[] */
    uint32_t platform, lender; /* string ids */
    size_t alert0, na;         /* its alerts: alerts[alert0 .. alert0 + na) */
    size_t why;                /* LW_APPLY_REFUSED: its reason's offset in the flush's why */
    size_t next;               /* the next event of its borrower, or NONE */
    bool replay;               /* a repeat of an event that may have raised alerts */
} pending_ev_t;

/* An entry's borrower, id (event_id or inquiry_id), platform and lender (an
 * inquiry's institution as both, interned as an event's are). */
static inline const char *pe_borrower(const pending_ev_t *pe)
{
    return pe->ev ? pe->ev->borrower_id : pe->iq->borrower_id;
}
static inline const char *pe_id(const pending_ev_t *pe)
{
    return pe->ev ? pe->ev->event_id : pe->iq->inquiry_id;
}
static inline const char *pe_platform(const pending_ev_t *pe)
{
    return pe->ev ? pe->ev->platform_id : pe->iq->institution_id;
}
static inline const char *pe_lender(const pending_ev_t *pe)
{
    return pe->ev ? pe->ev->lender_id : pe->iq->institution_id;
}

/* One distinct borrower of the flush. */
typedef struct slot {
    const pending_ev_t *first; /* its first event: id, topic, partition, epoch */
    lw_bstate_t st;            /* arrays kept across flushes */
    bool dirty, fenced, replay;
    bool cached; /* its state came from the flush in flight, not from a read */
    /* compare-on-write (write.lua): the state its new state was computed
     * from, exactly as Redis held it (in the flush's olds; none: absent) */
    bool old_none;
    size_t old_off, old_len;
    bool stale;               /* its write was refused: the key changed since it was read */
    bool redo;                /* read, applied and written again in this round of retry_stale() */
    bool retried;             /* retried at least once in this flush */
    int hslot;                /* a cluster: the hash slot of its keys; else 0 */
    int64_t fence_epoch;      /* fenced by a stamp (write.lua): the stamp's epoch; else 0 */
    size_t group;             /* its (topic, partition, epoch) in groups[] */
    size_t op_first, op_last; /* its operations in ops[], in order */
    /* its borrower's id, copied beside ev_last: every event of the batch is
     * matched to its slot by it, and reaching it through first, then the
     * caller's event, was two cache misses a match on a cluster batch */
    char bid[LW_BORROWER_ID_LEN + 1];
    size_t ev_first, ev_last; /* its events in ev[], in order (pending_ev_t.next) */
    redisReply *alerts;       /* HGETALL a:{..} when replayed (owned) */
    const redisReply *held;   /* strict: the same, an element of the EXEC reply */
} slot_t;

/* The writer of a partition in this flush: its epoch is checked once. */
typedef struct group {
    const pending_ev_t *first; /* its topic, partition, epoch */
    bool fenced;
} group_t;

/* An alert fired or a rule cleared, for write.lua. */
typedef struct op {
    size_t next;
    size_t ev;
    int rule;
    bool fire;
    size_t json_off, json_len; /* a fired alert's JSON in the flush's json */
    size_t alert;              /* and its struct in the flush's alerts */
} op_t;

/* Strict: an HGETALL a:{..} queued in the MULTI for a replayed slot. */
typedef struct hg_ref {
    size_t pos; /* its reply's index in the EXEC reply */
    size_t slot;
} hg_ref_t;

/* One EVALSHA of the write pipeline: slots order[first .. first+n). */
typedef struct chunk {
    size_t off, len; /* in buf */
    size_t first, n;
    int slot;   /* a cluster: the hash slot all its borrowers share */
    size_t pos; /* strict: its reply's index in the EXEC reply */
} chunk_t;

/* Where a flush is in its life: events queue in it, begin stages it (read,
 * applied, the MULTI's body sent, no EXEC yet), commit sends it (EXEC sent,
 * results not handed out), end hands its results out and it queues again. */
typedef enum flush_state { FL_QUEUE = 0, FL_STAGED, FL_SENT } flush_state_t;

/* One flush's working set (kept between flushes to reuse the memory), the
 * lw_flush_t the caller holds from begin to end. There are two, so that one
 * batch can be read and applied while Redis executes the other's write; each
 * has a connection of its own. Its state is the only record of which one is
 * staged and which one is sent. */
typedef struct lw_flush_s {
    flush_state_t state;
    void *opaque;             /* the caller's, handed to the alerts callback */
    redisContext *rc;         /* one Redis */
    lw_reply_arena_t *ra;     /* one Redis: the replies of its reads */
    lw_rcluster_t *cl;        /* a cluster: its own handle... */
    lw_rcluster_batch_t *bat; /* ...and batch */
    bool failed;              /* its last attempt failed: events kept, done again from the read */
    bool invalid;             /* staged on states of a write that then failed: read again */
    /* queued events */
    pending_ev_t *ev;
    size_t n, ncap;
    slot_t *slots;
    size_t nslots, slot_cap;
    uint64_t *map; /* open addressing: hash's high half | slot index + 1, 0 empty */
    size_t map_cap;
    group_t *groups;
    size_t ngroups, groups_cap;
    size_t nqueued;  /* strict: commands between MULTI and EXEC; 0: UNWATCH only */
    bool aborted;    /* strict: EXEC refused (an epoch key moved since WATCH) */
    size_t streamed; /* strict: slots [0, streamed) are queued in the MULTI */
    hg_ref_t *hg;    /* strict: the HGETALLs queued for replayed slots */
    size_t nhg, hg_cap;
    redisReply *exec; /* strict: the EXEC reply, until the next flush */
    op_t *ops;
    size_t nops, ops_cap;
    lw_alert_vec_t alerts; /* fired or handed back, in event order (pending_ev_t.alert0) */
    lw_sbuf_t json;        /* alert JSON of the flush */
    lw_sbuf_t why;         /* refused events' reasons, each NUL-terminated (pending_ev_t.why) */
    size_t *order;         /* write order of dirty slots (a cluster: by hash slot) */
    size_t *reads;         /* a cluster: the slots read, by hash slot */
    uint64_t *skeys;       /* a cluster: scratch of lw_storec_by_slot() */
    uint32_t *scount;      /* a cluster: its counts per hash slot (16385) */
    size_t nskeys;         /* a cluster: entries of skeys, (hash slot << 40 | index) */
    size_t reads_cap, skeys_cap;
    chunk_t *chunks;
    size_t nchunks;
    lw_apply_result_t *results; /* the caller's, until the flush ends */
    int64_t t0;                 /* when it began */
    lw_sbuf_t olds;             /* the states read (slot_t.old_off), for write.lua's compare */
    size_t nstale;              /* slots refused by the last write (slot_t.stale) */
    bool retrying;              /* retry_stale() runs: only slots with redo take part */
    bool retried;               /* some borrower was retried: a staged flush reads again */
    bool noscript;              /* strict: EXEC answered NOSCRIPT (nothing was written) */
} flush_t;

struct lw_store_s {
    redisContext *rc;  /* control: names, epochs, the caller's commands (one Redis) */
    lw_rcluster_t *cl; /* control on a cluster (NULL on one Redis) */
    lw_redis_url_t url;
    const lw_rules_t *rules;
    char *script;
    char sha[41];
    lw_script_opts_t opts;
    size_t chunk_max;
    FILE *tap;
    lw_store_alerts_cb *alerts_cb;
    void *alerts_opaque;
    const char **alerted; /* borrowers handed to alerts_cb */
    size_t alerted_cap;
    lw_dict_t *dict;
    /* rule i's id in lw:strings: states name their open alerts by it (layout
     * version 4), so an edit of the pack moves no alert; set every flush */
    uint32_t rule_ids[LW_RULES_MAX];
    lw_sbuf_t buf;   /* RESP of a pipeline */
    lw_sbuf_t state; /* one encoded state */
    flush_t fl[2];   /* events queue in the one neither staged nor sent */
    int64_t last_rtt_us;
    int64_t last_ack_us;
    uint64_t stale_retries; /* borrowers written again after a refused compare */
};

/* ---- The handle (store.c) ------------------------------------------------------- */

/* The flush's own connection, made when first needed (a cluster: lw_storec_ensure). */
lw_err_t lw_store_ensure_conn(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* A lost connection c (NULL: none) as a transient error; drops every connection. */
lw_err_t lw_store_conn_error(lw_store_t *st, redisContext *c, char *errstr, size_t errstr_size);
/* An unexpected reply as an error: transient for LOADING, BUSY, MASTERDOWN, TRYAGAIN. */
lw_err_t lw_store_reply_error(const redisReply *r, const char *what, char *errstr,
                              size_t errstr_size);

/* ---- The flush life cycle (flush.c) ---------------------------------------------- */

/* Frees a flush's working set and closes its connections (store destroy). */
void lw_store_flush_free(flush_t *f);
/* The flush in a state, or NULL: at most one is staged and one sent. */
static inline flush_t *lw_store_flush_in(lw_store_t *st, flush_state_t state)
{
    for (int i = 0; i < 2; i++)
        if (st->fl[i].state == state)
            return &st->fl[i];
    return NULL;
}

/* ---- The borrowers of a flush (batch.c) ------------------------------------------ */

/* Ids for the rules and the flush's new platform, lender and writer names. */
lw_err_t lw_store_intern_names(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Groups the events by borrower into slots (and their writers into groups). */
lw_err_t lw_store_gather_slots(lw_store_t *st, flush_t *f);
/* A slot's state from its value in a GET/MGET reply (nil: a new borrower). */
lw_err_t lw_store_load_state(slot_t *s, const redisReply *r, char *errstr, size_t errstr_size);
/* Keeps the bytes of a slot's state as read (a GET/MGET reply), for write.lua's compare. */
bool lw_store_keep_old(flush_t *f, slot_t *s, const redisReply *r);
/* Applies one borrower's events in order (the rules, its alerts and ops). */
lw_err_t lw_store_apply_slot(lw_store_t *st, flush_t *f, size_t slot);
/* A repeated event's alerts, handed back from the a:{..} replies its slot holds. */
lw_err_t lw_store_hand_back(flush_t *f, char *errstr, size_t errstr_size);
/* Whether a slot takes part in the current write: all, or in a retry only
 * the borrowers being retried. */
static inline bool lw_store_in_pass(const flush_t *f, const slot_t *s)
{
    return !f->retrying || s->redo;
}
/* One write.lua call for the slots idx[0..m) into b, with alert stream sk. */
bool lw_store_put_write_call(lw_store_t *st, flush_t *f, lw_sbuf_t *b, const size_t *idx, size_t m,
                             const char *sk);
/* Without strict fencing: the write.lua calls of the changed borrowers into
 * st->buf, as f->chunks (on a cluster one hash slot's a chunk). */
lw_err_t lw_store_build_writes(lw_store_t *st, flush_t *f);
/* Reads write.lua's reply to chunk c (one integer per borrower: 0 written,
 * -1 changed since read): marks the refused slots stale. false: not such a
 * reply (nothing marked). */
bool lw_store_write_codes(flush_t *f, const chunk_t *c, const redisReply *r);

/* ---- On one Redis (store_single.c) ----------------------------------------------- */

/* Step 1: the borrowers' states (strict: after WATCH and the epochs), each
 * applied as it arrives; strict, the writes streamed into the MULTI too. */
lw_err_t lw_stores_read(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Without strict fencing: the a:{..} of replayed borrowers, handed back. */
lw_err_t lw_stores_read_alerts(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Without strict fencing: sends the chunks lw_store_build_writes() made, reads their codes. */
lw_err_t lw_stores_send_writes(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Strict: queues the writes of slots [f->streamed, hi) in the MULTI. */
lw_err_t lw_stores_stream_chunk(lw_store_t *st, flush_t *f, size_t hi, char *errstr,
                                size_t errstr_size);
/* Strict: the MULTI's tail (EXEC, or UNWATCH when nothing was queued) into st->buf. */
lw_err_t lw_stores_build_tail(lw_store_t *st, flush_t *f);
/* Strict: sends the tail and pushes the connection's output out. */
lw_err_t lw_stores_send_multi(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Strict: reads the MULTI's replies (f->aborted, f->noscript; keeps f->exec). */
lw_err_t lw_stores_recv_multi(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Strict: points replayed slots at their HGETALL in the EXEC reply, hands back. */
lw_err_t lw_stores_hold_alerts(flush_t *f, char *errstr, size_t errstr_size);
/* Strict: closes a connection left in an open MULTI. */
void lw_stores_drop_open_multi(flush_t *f);
/* WAIT for opts.wait_replicas replicas; transient when too few have the write. */
lw_err_t lw_stores_wait_replicas(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Strict: SCRIPT LOAD on the flush's connection after NOSCRIPT. */
lw_err_t lw_stores_reload_script(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Strict: marks the slots stale from write.lua's answers in the EXEC reply x. */
lw_err_t lw_stores_exec_codes(flush_t *f, const redisReply *x, char *errstr, size_t errstr_size);
/* A retry: the state and a:{..} of every slot with redo (strict: after WATCH). */
lw_err_t lw_stores_reread(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Strict: the retry's own MULTI/EXEC for the retried borrowers. */
lw_err_t lw_stores_retry_multi(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);

/* ---- On a cluster (store_cluster.c) ---------------------------------------------- */

/* An lw_rcluster error as the store's: LW_ERR_TRANSIENT when worth retrying. */
lw_err_t lw_storec_error(lw_rcluster_err_t e);
/* The hash slot of a borrower (all its keys carry {borrower_id}). */
int lw_storec_slot(const char *bid);
/* Reorders idx[0..n) (indices of f->slots) by hash slot, keeping their order
 * within a slot; false when out of memory. */
bool lw_storec_by_slot(flush_t *f, size_t *idx, size_t n);
/* The end of the run of idx[k..) in one hash slot, at most max long (from
 * lw_storec_by_slot()'s keys when idx is what it sorted last). */
size_t lw_storec_run_end(const flush_t *f, const size_t *idx, size_t n, size_t k, size_t max);
/* Asks the cache for the borrowers ahead of idx[q] in a loop over idx[0..n). */
void lw_storec_prefetch(const flush_t *f, const size_t *idx, size_t n, size_t q);
/* The alert stream of a hash slot, "lw:alerts:{TAG}", into buf; its length. */
size_t lw_storec_stream_key(int slot, char *buf, size_t cap);
/* Refreshes the control handle's map and loads the write script on every master. */
lw_err_t lw_storec_connect(lw_store_t *st, char *errstr, size_t errstr_size);
/* The flush's own handle and batch, made when first needed. */
lw_err_t lw_storec_ensure(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
void lw_storec_drop(flush_t *f); /* closes them; NULL members are fine */
/* The control handle's connection to the master of key's slot (borrowed). */
redisContext *lw_storec_context(lw_store_t *st, const char *key, char *errstr, size_t errstr_size);
/* Step 1 on a cluster: an MGET per hash slot of the batch (its borrowers,
 * chunk_max at most), all masters at once, then apply. */
lw_err_t lw_storec_read(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* A retry: the state (GET, kept as the old state too) and a:{..} (HGETALL,
 * borrowed in s->held until the batch is next used) of every slot with redo. */
lw_err_t lw_storec_reread(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* The a:{..} of replayed borrowers, handed back. */
lw_err_t lw_storec_read_alerts(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
/* Step 3, in two halves so that Redis executes one flush's writes while the
 * next is read and applied: send the chunks lw_store_build_writes made, one group
 * each (commit); read the replies, then WAIT when asked (end). NOSCRIPT
 * loads the script on every master and fails the flush as transient, so it
 * is done again. */
lw_err_t lw_storec_write_send(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);
lw_err_t lw_storec_write_end(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size);

/* ---- RESP (resp.c) ------------------------------------------------------------ */

bool lw_resp_hdr(lw_sbuf_t *b, char c, int64_t n);
bool lw_resp_bulk(lw_sbuf_t *b, const void *s, size_t n);
bool lw_resp_str(lw_sbuf_t *b, const char *s);
bool lw_resp_int(lw_sbuf_t *b, int64_t v);
bool lw_resp_key(lw_sbuf_t *b, char prefix, const char *bid);

#endif
