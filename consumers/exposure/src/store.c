/*
 * store.c - the Redis side of loanwire-exposure: read, decide, write back.
 *
 * A flush applies the queued events in one pipelined round trip and a
 * write:
 *
 *   1. read: with strict fencing WATCH + MGET the partitions' epoch keys
 *      (a partition whose epoch moved on is fenced here), then GET every
 *      distinct borrower of the batch;
 *   2. apply each borrower's events in order in C (borrower.c) - the
 *      sequence rule, windows and rules - as soon as its state arrives, so
 *      this overlaps Redis answering the rest of step 1;
 *   3. write the changed borrowers with the alerts they raised and cleared.
 *      Strict: one MULTI/EXEC for the batch, which writes nothing if a
 *      watched epoch key changed since step 1 (the flush is then redone and
 *      finds the fence). Its MSETs are streamed into the MULTI while step 2
 *      runs, chunk by chunk; a repeated event's borrower gets an HGETALL
 *      a:{..} in it too (a repeat hands back the alerts it raised), and a
 *      cleared alert moves to "~rule" by a small EVAL, so no extra round
 *      trip is needed. Without strict fencing: an HGETALL round trip for
 *      repeats, then write.lua per chunk of borrowers, which checks each
 *      borrower's fence stamp (Redis Cluster).
 *
 * lw_store_flush_begin() stops after sending the write; the caller works
 * while Redis executes it, and lw_store_flush_end() reads its replies.
 *
 * Only the partition's owner writes its borrowers (epochs fence the rest),
 * so what was read in 1 is still what Redis holds in 3. Nothing is kept
 * between flushes: a flush that failed half way (connection lost, Redis
 * restarted) is simply done again from step 1 by the next flush of the same
 * events, and the sequence rule makes what had landed harmless. New platform
 * and lender names get their ids (dict.c) before step 1. NOSCRIPT is mended
 * here by loading the script again and resending what it refused.
 */
#include "exposure_int.h"

#include "loanwire/conf.h"
#include "loanwire/hash.h"
#include "loanwire/log.h"
#include "loanwire/redis.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE SIZE_MAX

/* One queued event. */
typedef struct pending_ev {
    lw_event_t ev;
    const char *topic;
    int32_t partition;
    int64_t epoch;
    size_t slot;               /* its borrower in slots[] */
    uint32_t platform, lender; /* string ids */
    size_t alert0, na;         /* its alerts: alerts[alert0 .. alert0 + na) */
    size_t next;               /* the next event of its borrower, or NONE */
    bool replay;               /* a repeat of an event that may have raised alerts */
} pending_ev_t;

/* One distinct borrower of the flush. */
typedef struct slot {
    const pending_ev_t *first; /* its first event: id, topic, partition, epoch */
    lw_bstate_t st;            /* arrays kept across flushes */
    bool dirty, fenced, replay;
    size_t group;             /* its (topic, partition, epoch) in groups[] */
    size_t op_first, op_last; /* its operations in ops[], in order */
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
    size_t json_off, json_len;
    char alert_id[33];
} op_t;

typedef struct alert_ref {
    size_t off, len; /* in json */
} alert_ref_t;

/* Strict: an HGETALL a:{..} queued in the MULTI for a replayed slot. */
typedef struct hg_ref {
    size_t pos; /* its reply's index in the EXEC reply */
    size_t slot;
} hg_ref_t;

/* One EVALSHA of the write pipeline: slots order[first .. first+n). */
typedef struct chunk {
    size_t off, len; /* in buf */
    size_t first, n;
} chunk_t;

struct lw_store_s {
    redisContext *rc;
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
    /* queued events */
    pending_ev_t *ev;
    size_t n, ncap;
    bool failed; /* the last flush failed: the next append starts over */
    /* one flush's working set, kept to reuse the memory */
    slot_t *slots;
    size_t nslots, slot_cap;
    size_t *map; /* open addressing: slot index + 1, 0 empty */
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
    alert_ref_t *alerts;
    size_t nalerts, alerts_cap;
    lw_sbuf_t json;  /* alert JSON of the flush */
    lw_sbuf_t buf;   /* RESP of a pipeline */
    lw_sbuf_t state; /* one encoded state */
    size_t *order;   /* write order of dirty slots */
    chunk_t *chunks;
    size_t nchunks;
    int64_t last_rtt_us;
    int64_t last_ack_us;
    /* a flush begun and not ended (lw_store_flush_begin) */
    bool flying;         /* its MULTI/EXEC is sent; the replies may be unread */
    bool settled;        /* they were read early (settle): outcome below */
    lw_err_t settle_err; /* their outcome, when settled */
    char settle_errstr[256];
    int64_t settle_us;          /* and when they were read (lw_now_us) */
    lw_apply_result_t *results; /* the caller's, until the flush ends */
    int64_t t0;                 /* when it began */
};

static void settle(lw_store_t *st);

/* ---- Connection --------------------------------------------------------------- */

static lw_err_t store_connect(lw_store_t *st, char *errstr, size_t errstr_size)
{
    lw_err_t err;
    redisContext *rc = lw_redis_connect(&st->url, 5000, &err, errstr, errstr_size);
    if (!rc)
        return err;
    /* a pipeline of a whole batch can take longer than a connect should */
    redisSetTimeout(rc, (struct timeval){30, 0});
    redisReply *r;
    r = redisCommand(rc, "SCRIPT LOAD %s", st->script);
    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        bool loading = r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "LOADING", 7);
        snprintf(errstr, errstr_size, "Redis SCRIPT LOAD: %s",
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply") : rc->errstr);
        freeReplyObject(r);
        redisFree(rc);
        return (!r || loading) ? LW_ERR_TRANSIENT : LW_ERR_REDIS;
    }
    memcpy(st->sha, r->str, 40);
    st->sha[40] = '\0';
    freeReplyObject(r);
    redisFree(st->rc);
    st->rc = rc;
    /* another Redis (or one that lost data) may number names differently */
    lw_dict_clear(st->dict);
    return LW_OK;
}

lw_store_t *lw_store_new(const char *redis_url, const lw_rules_t *rules,
                         const lw_script_opts_t *opts, char *errstr, size_t errstr_size)
{
    lw_store_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (lw_redis_url_parse(redis_url, &st->url, errstr, errstr_size) != LW_OK)
        goto fail;
    st->rules = rules;
    st->opts = *opts;
    /* one borrower key per call when neither shared key is declared (Redis
     * Cluster: a call must stay in one slot) */
    if (opts->chunk_max)
        st->chunk_max = opts->chunk_max;
    else
        st->chunk_max = opts->strict_fencing || opts->alert_stream ? LW_CHUNK_DEFAULT : 1;
    st->script = lw_script_build(opts);
    st->dict = lw_dict_new();
    if (!st->script || !st->dict) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (store_connect(st, errstr, errstr_size) != LW_OK)
        goto fail;
    return st;
fail:
    lw_store_destroy(st);
    return NULL;
}

static void free_alert_replies(lw_store_t *st);

void lw_store_destroy(lw_store_t *st)
{
    if (!st)
        return;
    free_alert_replies(st);
    redisFree(st->rc);
    free(st->script);
    lw_dict_destroy(st->dict);
    free(st->ev);
    for (size_t i = 0; i < st->slot_cap; i++)
        lw_bstate_free(&st->slots[i].st);
    free(st->slots);
    free(st->map);
    free(st->groups);
    free(st->ops);
    free(st->alerts);
    lw_sbuf_free(&st->json);
    lw_sbuf_free(&st->buf);
    lw_sbuf_free(&st->state);
    free(st->order);
    free(st->chunks);
    free(st->alerted);
    free(st->hg);
    freeReplyObject(st->exec);
    free(st);
}

lw_err_t lw_store_reconnect(lw_store_t *st, char *errstr, size_t errstr_size)
{
    settle(st);
    redisFree(st->rc);
    st->rc = NULL;
    return store_connect(st, errstr, errstr_size);
}

const char *lw_store_script_sha(const lw_store_t *st)
{
    return st->sha;
}

struct redisContext *lw_store_redis(lw_store_t *st)
{
    settle(st); /* the caller's commands must not read our replies */
    return st->rc;
}

int64_t lw_store_last_rtt_us(const lw_store_t *st)
{
    return st->last_rtt_us;
}

int64_t lw_store_last_ack_us(const lw_store_t *st)
{
    return st->last_ack_us;
}

void lw_store_set_tap(lw_store_t *st, FILE *tap)
{
    st->tap = tap;
}

void lw_store_set_alerts_cb(lw_store_t *st, lw_store_alerts_cb *cb, void *opaque)
{
    st->alerts_cb = cb;
    st->alerts_opaque = opaque;
}

/* Hands the borrowers whose alerts this flush changes to the callback. */
static lw_err_t alerts_check(lw_store_t *st, char *errstr, size_t errstr_size)
{
    size_t n = 0;
    if (!st->alerts_cb)
        return LW_OK;
    for (size_t i = 0; i < st->nslots; i++) {
        const slot_t *s = &st->slots[i];
        if (s->fenced || s->op_first == NONE)
            continue;
        const char **na = lw_array_grow(st->alerted, &st->alerted_cap, n + 1, sizeof *na, 64);
        if (!na)
            return LW_ERR_NOMEM;
        st->alerted = na;
        st->alerted[n++] = s->first->ev.borrower_id;
    }
    return n ? st->alerts_cb(st->alerts_opaque, st->alerted, n, errstr, errstr_size) : LW_OK;
}

size_t lw_store_pending(const lw_store_t *st)
{
    return st->n;
}

void lw_store_discard(lw_store_t *st)
{
    settle(st); /* the replies in flight would answer the next command */
    st->flying = st->settled = false;
    st->n = 0;
    st->failed = false;
}

bool lw_store_flying(const lw_store_t *st)
{
    return st->flying;
}

lw_err_t lw_store_append(lw_store_t *st, const lw_event_t *ev, const char *topic, int32_t partition,
                         int64_t epoch)
{
    if (st->flying)
        return LW_ERR_INVALID_ARG; /* the queue belongs to the flush in flight */
    if (st->failed)
        lw_store_discard(st); /* appending after a failed flush starts over */
    pending_ev_t *ne = lw_array_grow(st->ev, &st->ncap, st->n + 1, sizeof *ne, 1024);
    if (!ne)
        return LW_ERR_NOMEM;
    st->ev = ne;
    pending_ev_t *pe = &st->ev[st->n++];
    pe->ev = *ev;
    pe->topic = topic;
    pe->partition = partition;
    pe->epoch = epoch;
    return LW_OK;
}

/* ---- RESP ------------------------------------------------------------------------ */

/* Decimal digits of v into p (no NUL); returns the length. */
static size_t fmt_i64(char *p, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t o = 0;
    if (v < 0)
        p[o++] = '-';
    while (n)
        p[o++] = tmp[--n];
    return o;
}

static bool put_hdr(lw_sbuf_t *b, char c, int64_t n)
{
    if (!lw_sbuf_reserve(b, 32))
        return false;
    char *p = b->p + b->len;
    *p++ = c;
    p += fmt_i64(p, n);
    *p++ = '\r';
    *p++ = '\n';
    b->len = (size_t)(p - b->p);
    return true;
}

static bool put_bulk(lw_sbuf_t *b, const void *s, size_t n)
{
    if (!put_hdr(b, '$', (int64_t)n) || !lw_sbuf_reserve(b, n + 2))
        return false;
    memcpy(b->p + b->len, s, n);
    memcpy(b->p + b->len + n, "\r\n", 2);
    b->len += n + 2;
    return true;
}

static bool put_str(lw_sbuf_t *b, const char *s)
{
    return put_bulk(b, s, strlen(s));
}

static bool put_int(lw_sbuf_t *b, int64_t v)
{
    char tmp[24];
    return put_bulk(b, tmp, fmt_i64(tmp, v));
}

static bool put_key(lw_sbuf_t *b, char prefix, const char *bid)
{
    char k[LW_STATE_KEY_MAX];
    return put_bulk(b, k, lw_borrower_key(prefix, bid, k));
}

static lw_err_t conn_error(lw_store_t *st, char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "Redis %s:%d: %s", st->url.host, st->url.port,
             st->rc ? st->rc->errstr : "not connected");
    redisFree(st->rc);
    st->rc = NULL;
    return LW_ERR_TRANSIENT;
}

/* Writes what hiredis holds for the connection: it would only do so when a
 * reply is asked for, and a flush in flight must reach Redis before then. */
static lw_err_t push_out(lw_store_t *st, char *errstr, size_t errstr_size)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(st->rc, &done) != REDIS_OK)
            return conn_error(st, errstr, errstr_size);
    return LW_OK;
}

/* Sends buf[off, off+len) (and copies it to the tap). */
static lw_err_t send_raw(lw_store_t *st, size_t off, size_t len, char *errstr, size_t errstr_size)
{
    if (st->tap)
        fwrite(st->buf.p + off, 1, len, st->tap);
    if (redisAppendFormattedCommand(st->rc, st->buf.p + off, len) != REDIS_OK)
        return conn_error(st, errstr, errstr_size);
    return LW_OK;
}

static lw_err_t reply_error(const redisReply *r, const char *what, char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "%s: unexpected reply (type %d): %s", what, r->type,
             r->type == REDIS_REPLY_ERROR ? r->str : "");
    if (r->type == REDIS_REPLY_ERROR &&
        (!strncmp(r->str, "LOADING", 7) || !strncmp(r->str, "BUSY", 4) ||
         !strncmp(r->str, "MASTERDOWN", 10) || !strncmp(r->str, "TRYAGAIN", 8)))
        return LW_ERR_TRANSIENT;
    return LW_ERR_REDIS;
}

/* ---- Step 0: the borrowers of the flush ---------------------------------------- */

static bool same_owner(const pending_ev_t *a, const pending_ev_t *b)
{
    return a->partition == b->partition && a->epoch == b->epoch &&
           (a->topic == b->topic || !strcmp(a->topic, b->topic));
}

static lw_err_t gather_slots(lw_store_t *st)
{
    size_t need = 64;
    while (need < 2 * st->n)
        need *= 2;
    if (need > st->map_cap) {
        size_t *nm = realloc(st->map, need * sizeof *nm);
        if (!nm)
            return LW_ERR_NOMEM;
        st->map = nm;
        st->map_cap = need;
    }
    memset(st->map, 0, st->map_cap * sizeof *st->map);
    if (st->n > st->slot_cap) {
        slot_t *ns = realloc(st->slots, st->n * sizeof *ns);
        if (!ns)
            return LW_ERR_NOMEM;
        memset(ns + st->slot_cap, 0, (st->n - st->slot_cap) * sizeof *ns);
        st->slots = ns;
        st->slot_cap = st->n;
    }
    st->nslots = 0;
    st->ngroups = 0;
    for (size_t i = 0; i < st->n; i++) {
        pending_ev_t *pe = &st->ev[i];
        size_t j = lw_hash_str(pe->ev.borrower_id) & (st->map_cap - 1);
        while (st->map[j] &&
               strcmp(st->slots[st->map[j] - 1].first->ev.borrower_id, pe->ev.borrower_id))
            j = (j + 1) & (st->map_cap - 1);
        pe->next = NONE;
        if (!st->map[j]) {
            slot_t *s = &st->slots[st->nslots++];
            s->first = pe;
            s->ev_first = s->ev_last = i;
            s->dirty = s->fenced = s->replay = false;
            s->op_first = s->op_last = NONE;
            s->alerts = NULL;
            s->held = NULL;
            st->map[j] = st->nslots;
            /* partitions are few: a linear search */
            size_t g = 0;
            while (g < st->ngroups && !same_owner(st->groups[g].first, pe))
                g++;
            if (g == st->ngroups) {
                group_t *ng = lw_array_grow(st->groups, &st->groups_cap, g + 1, sizeof *ng, 16);
                if (!ng)
                    return LW_ERR_NOMEM;
                st->groups = ng;
                st->groups[st->ngroups++] = (group_t){pe, false};
            }
            s->group = g;
        } else {
            slot_t *s = &st->slots[st->map[j] - 1];
            st->ev[s->ev_last].next = i;
            s->ev_last = i;
        }
        pe->slot = st->map[j] - 1;
        pe->na = 0;
        pe->replay = false;
    }
    return LW_OK;
}

/* ---- Step 1: read ------------------------------------------------------------------ */

/* Strict fencing: WATCH the partitions' epoch keys (so a rebalance from
 * now on makes our EXEC fail) and read them (a rebalance before now fences
 * the partition here). */
static bool put_epoch_reads(lw_store_t *st)
{
    lw_sbuf_t *b = &st->buf;
    char ek[256];
    for (int pass = 0; pass < 2; pass++) {
        if (!put_hdr(b, '*', 1 + (int64_t)st->ngroups) || !put_str(b, pass ? "MGET" : "WATCH"))
            return false;
        for (size_t g = 0; g < st->ngroups; g++) {
            lw_epoch_key(st->groups[g].first->topic, st->groups[g].first->partition, ek, sizeof ek);
            if (!put_str(b, ek))
                return false;
        }
    }
    return true;
}

static lw_err_t check_epochs(lw_store_t *st, char *errstr, size_t errstr_size)
{
    redisReply *w = NULL, *m = NULL;
    if (redisGetReply(st->rc, (void **)&w) != REDIS_OK || !w ||
        redisGetReply(st->rc, (void **)&m) != REDIS_OK || !m) {
        freeReplyObject(w);
        return conn_error(st, errstr, errstr_size);
    }
    lw_err_t err = LW_OK;
    if (w->type != REDIS_REPLY_STATUS)
        err = reply_error(w, "WATCH", errstr, errstr_size);
    else if (m->type != REDIS_REPLY_ARRAY || m->elements != st->ngroups)
        err = reply_error(m, "MGET (epochs)", errstr, errstr_size);
    for (size_t g = 0; err == LW_OK && g < st->ngroups; g++) {
        const redisReply *e = m->element[g];
        long long cur = e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
        st->groups[g].fenced = st->groups[g].first->epoch < cur;
    }
    for (size_t i = 0; err == LW_OK && i < st->nslots; i++)
        st->slots[i].fenced = st->groups[st->slots[i].group].fenced;
    freeReplyObject(w);
    freeReplyObject(m);
    return err;
}

static lw_err_t apply_slot(lw_store_t *st, size_t slot, lw_apply_result_t *results);
static lw_err_t stream_chunk(lw_store_t *st, size_t hi, char *errstr, size_t errstr_size);

/* Reads every borrower of the batch and applies its events as its state
 * arrives (step 2 runs inside step 1). */
static lw_err_t read_states(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                            size_t errstr_size)
{
    st->buf.len = 0;
    st->streamed = 0;
    st->nqueued = 0;
    st->nhg = 0;
    if (st->opts.strict_fencing && !put_epoch_reads(st))
        return LW_ERR_NOMEM;
    for (size_t i = 0; i < st->nslots; i++)
        if (!put_hdr(&st->buf, '*', 2) || !put_bulk(&st->buf, "GET", 3) ||
            !put_key(&st->buf, 'b', st->slots[i].first->ev.borrower_id))
            return LW_ERR_NOMEM;
    lw_err_t err = send_raw(st, 0, st->buf.len, errstr, errstr_size);
    if (err)
        return err;
    if (st->opts.strict_fencing &&
        (err = check_epochs(st, errstr, errstr_size)) == LW_ERR_TRANSIENT)
        return err;
    for (size_t i = 0; i < st->nslots; i++) {
        redisReply *r = NULL;
        if (redisGetReply(st->rc, (void **)&r) != REDIS_OK || !r)
            return conn_error(st, errstr, errstr_size);
        slot_t *s = &st->slots[i];
        if (err == LW_OK) {
            if (r->type == REDIS_REPLY_NIL) {
                lw_bstate_reset(&s->st);
            } else if (r->type == REDIS_REPLY_STRING) {
                lw_err_t e = lw_bstate_decode(&s->st, r->str, r->len);
                if (e == LW_ERR_NOMEM) {
                    snprintf(errstr, errstr_size, "out of memory");
                    err = e;
                } else if (e != LW_OK) {
                    snprintf(errstr, errstr_size,
                             "borrower state b:{%s}: malformed value (%zu bytes; not layout "
                             "version %d)",
                             s->first->ev.borrower_id, r->len, LW_STATE_VERSION);
                    err = LW_ERR_REDIS;
                }
            } else {
                err = reply_error(r, "GET", errstr, errstr_size);
            }
            if (err == LW_OK && (err = apply_slot(st, i, results)) == LW_ERR_NOMEM)
                snprintf(errstr, errstr_size, "out of memory");
        }
        freeReplyObject(r);
        /* strict: queue each chunk's writes while Redis answers the rest */
        if (err == LW_OK && st->opts.strict_fencing && i + 1 - st->streamed >= st->chunk_max)
            err = stream_chunk(st, i + 1, errstr, errstr_size);
    }
    return err;
}

/* ---- Step 2: apply -------------------------------------------------------------- */

static bool add_op(lw_store_t *st, size_t slot, size_t ev, int rule, bool fire, size_t off,
                   size_t len, const char *alert_id)
{
    op_t *no = lw_array_grow(st->ops, &st->ops_cap, st->nops + 1, sizeof *no, 256);
    if (!no)
        return false;
    st->ops = no;
    op_t *o = &st->ops[st->nops];
    o->next = NONE;
    o->ev = ev;
    o->rule = rule;
    o->fire = fire;
    o->json_off = off;
    o->json_len = len;
    if (alert_id)
        memcpy(o->alert_id, alert_id, 33);
    slot_t *s = &st->slots[slot];
    if (s->op_last == NONE)
        s->op_first = st->nops;
    else
        st->ops[s->op_last].next = st->nops;
    s->op_last = st->nops++;
    return true;
}

static bool add_alert(lw_store_t *st, size_t off, size_t len)
{
    alert_ref_t *na = lw_array_grow(st->alerts, &st->alerts_cap, st->nalerts + 1, sizeof *na, 256);
    if (!na)
        return false;
    st->alerts = na;
    st->alerts[st->nalerts++] = (alert_ref_t){off, len};
    return true;
}

/* Applies one borrower's events in order. Borrowers are independent, so
 * read_states() calls this as each state arrives, while Redis is still
 * working through the rest of the batch's reads. */
static lw_err_t apply_slot(lw_store_t *st, size_t slot, lw_apply_result_t *results)
{
    slot_t *s = &st->slots[slot];
    for (size_t i = s->ev_first; i != NONE; i = st->ev[i].next) {
        pending_ev_t *pe = &st->ev[i];
        const lw_event_t *ev = &pe->ev;
        lw_bapply_out_t o;
        if (s->fenced) {
            results[i].code = LW_APPLY_FENCED;
            results[i].n_alerts = 0;
            pe->alert0 = st->nalerts;
            continue;
        }
        lw_apply_code_t code = lw_bstate_apply(&s->st, st->rules, ev, pe->platform, pe->lender,
                                               pe->partition, pe->epoch, &st->json, &o);
        if (o.nomem)
            return LW_ERR_NOMEM;
        results[i].code = code;
        results[i].n_alerts = 0;
        pe->alert0 = st->nalerts;
        if (o.changed)
            s->dirty = true;
        for (size_t k = 0; k < o.n_fired; k++)
            if (!add_alert(st, o.json_off[k], o.json_len[k]) ||
                !add_op(st, slot, i, o.fired[k], true, o.json_off[k], o.json_len[k], o.alert_id[k]))
                return LW_ERR_NOMEM;
        pe->na = o.n_fired;
        for (size_t k = 0; k < o.n_cleared; k++)
            if (!add_op(st, slot, i, o.cleared[k], false, 0, 0, NULL))
                return LW_ERR_NOMEM;
        /* a repeat may be the redelivery of an event whose alert was never
         * published (a crash between Redis and Kafka): publish it again */
        if ((code == LW_APPLY_DUPLICATE || code == LW_APPLY_OUT_OF_ORDER) && s->st.mask != 0)
            pe->replay = s->replay = true;
    }
    return LW_OK;
}

/* A repeated event hands back the alerts it raised before, open or cleared
 * since (a crash may have lost their first publication): those in its
 * borrower's a:{..} (HGETALL, read by read_alerts or held in the EXEC
 * reply) whose alert id is the one this event makes for their rule. */
static lw_err_t hand_back(lw_store_t *st, char *errstr, size_t errstr_size)
{
    for (size_t e = 0; e < st->n; e++) {
        pending_ev_t *pe = &st->ev[e];
        const slot_t *s = &st->slots[pe->slot];
        const redisReply *r = s->alerts ? s->alerts : s->held;
        if (!pe->replay || !r)
            continue;
        size_t first = st->nalerts;
        for (size_t k = 0; k + 1 < r->elements; k += 2) {
            const redisReply *f = r->element[k], *v = r->element[k + 1];
            /* a value is alert JSON: {"alert_id":"<32 hex>",... */
            if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || v->len < 45)
                continue;
            char rule[LW_ID_MAX + 1], id[33];
            snprintf(rule, sizeof rule, "%s", f->str[0] == '~' ? f->str + 1 : f->str);
            lw_alert_id(pe->ev.borrower_id, rule, pe->ev.event_id, id);
            if (memcmp(v->str + 13, id, 32))
                continue;
            size_t off = st->json.len;
            if (!lw_sbuf_reserve(&st->json, v->len) || !add_alert(st, off, v->len)) {
                snprintf(errstr, errstr_size, "out of memory");
                return LW_ERR_NOMEM;
            }
            memcpy(st->json.p + off, v->str, v->len);
            st->json.len += v->len;
        }
        pe->alert0 = first;
        pe->na = st->nalerts - first;
    }
    return LW_OK;
}

/* Without strict fencing: one HGETALL a:{..} round trip for the borrowers
 * with a repeated event (write.lua moves cleared alerts itself). The
 * replies stay on the slots until the flush ends. */
static lw_err_t read_alerts(lw_store_t *st, char *errstr, size_t errstr_size)
{
    st->buf.len = 0;
    size_t nask = 0;
    for (size_t i = 0; i < st->nslots; i++) {
        if (!st->slots[i].replay)
            continue;
        if (!put_hdr(&st->buf, '*', 2) || !put_bulk(&st->buf, "HGETALL", 7) ||
            !put_key(&st->buf, 'a', st->slots[i].first->ev.borrower_id))
            return LW_ERR_NOMEM;
        nask++;
    }
    if (nask == 0)
        return LW_OK;
    lw_err_t err = send_raw(st, 0, st->buf.len, errstr, errstr_size);
    for (size_t i = 0; i < st->nslots && err == LW_OK; i++) {
        slot_t *s = &st->slots[i];
        if (!s->replay)
            continue;
        if (redisGetReply(st->rc, (void **)&s->alerts) != REDIS_OK || !s->alerts)
            return conn_error(st, errstr, errstr_size);
        if (s->alerts->type != REDIS_REPLY_ARRAY)
            err = reply_error(s->alerts, "HGETALL", errstr, errstr_size);
    }
    return err ? err : hand_back(st, errstr, errstr_size);
}

static void free_alert_replies(lw_store_t *st)
{
    for (size_t i = 0; i < st->nslots; i++) {
        freeReplyObject(st->slots[i].alerts);
        st->slots[i].alerts = NULL;
    }
}

/* ---- Step 3: write ------------------------------------------------------------------ */

/* Without strict fencing: write.lua per chunk of borrowers of one partition. */
static lw_err_t build_writes(lw_store_t *st)
{
    int nshared = st->opts.alert_stream ? 1 : 0;
    size_t nd = 0;
    for (size_t i = 0; i < st->nslots; i++)
        nd += st->slots[i].dirty;
    size_t *no = realloc(st->order, (nd ? nd : 1) * sizeof *no);
    chunk_t *nc = realloc(st->chunks, (nd ? nd : 1) * sizeof *nc);
    if (no)
        st->order = no;
    if (nc)
        st->chunks = nc;
    if (!no || !nc)
        return LW_ERR_NOMEM;
    /* the changed borrowers by owner (step 0's groups), each group's in order */
    size_t k = 0;
    for (size_t g = 0; g < st->ngroups; g++)
        for (size_t i = 0; i < st->nslots; i++)
            if (st->slots[i].dirty && st->slots[i].group == g)
                st->order[k++] = i;
    st->buf.len = 0;
    st->nchunks = 0;
    for (size_t i = 0; i < nd;) {
        size_t grp = st->slots[st->order[i]].group, j = i + 1;
        const pending_ev_t *g = st->groups[grp].first;
        while (j < nd && j - i < st->chunk_max && st->slots[st->order[j]].group == grp)
            j++;
        size_t m = j - i, nargs = 3 + m + (size_t)nshared + 3;
        for (size_t q = i; q < j; q++) {
            nargs += 2;
            for (size_t o = st->slots[st->order[q]].op_first; o != NONE; o = st->ops[o].next)
                nargs += st->ops[o].fire ? 7 : 2;
        }
        chunk_t *c = &st->chunks[st->nchunks++];
        c->off = st->buf.len;
        c->first = i;
        c->n = m;
        lw_sbuf_t *b = &st->buf;
        bool ok = put_hdr(b, '*', (int64_t)nargs) && put_bulk(b, "EVALSHA", 7) &&
                  put_bulk(b, st->sha, 40) && put_int(b, (int64_t)m + nshared);
        for (size_t q = i; ok && q < j; q++)
            ok = put_key(b, 'b', st->slots[st->order[q]].first->ev.borrower_id);
        if (ok && nshared >= 1)
            ok = put_str(b, LW_REDIS_ALERT_STREAM);
        ok = ok && put_int(b, g->partition) && put_int(b, g->epoch) && put_int(b, (int64_t)m);
        for (size_t q = i; ok && q < j; q++) {
            slot_t *s = &st->slots[st->order[q]];
            size_t nops = 0;
            for (size_t o = s->op_first; o != NONE; o = st->ops[o].next)
                nops++;
            st->state.len = 0;
            ok = lw_bstate_encode(&s->st, &st->state) && put_bulk(b, st->state.p, st->state.len) &&
                 put_int(b, (int64_t)nops);
            for (size_t o = s->op_first; ok && o != NONE; o = st->ops[o].next) {
                const op_t *op = &st->ops[o];
                const lw_rule_t *r = &st->rules->rules[op->rule];
                if (!op->fire) {
                    ok = put_bulk(b, "C", 1) && put_str(b, r->id);
                    continue;
                }
                const lw_event_t *ev = &st->ev[op->ev].ev;
                ok = put_bulk(b, "F", 1) && put_str(b, r->id) &&
                     put_bulk(b, st->json.p + op->json_off, op->json_len) &&
                     put_str(b, op->alert_id) && put_str(b, lw_severity_name(r->severity)) &&
                     put_str(b, ev->platform_id) && put_str(b, ev->lender_id);
            }
        }
        if (!ok)
            return LW_ERR_NOMEM;
        c->len = st->buf.len - c->off;
        i = j;
    }
    return LW_OK;
}

/* Sends the chunks, reading one array of per-borrower codes each. */
static lw_err_t send_writes(lw_store_t *st, char *errstr, size_t errstr_size)
{
    size_t *todo = malloc((st->nchunks ? st->nchunks : 1) * sizeof *todo);
    if (!todo)
        return LW_ERR_NOMEM;
    size_t ntodo = st->nchunks;
    for (size_t i = 0; i < ntodo; i++)
        todo[i] = i;
    lw_err_t err = LW_OK;
    for (int round = 0; ntodo > 0 && err == LW_OK; round++) {
        if (round == 3) {
            snprintf(errstr, errstr_size, "Redis keeps answering NOSCRIPT");
            err = LW_ERR_TRANSIENT;
            break;
        }
        if (round > 0) {
            redisReply *r = redisCommand(st->rc, "SCRIPT LOAD %s", st->script);
            bool ok = r && r->type == REDIS_REPLY_STRING;
            freeReplyObject(r);
            if (!ok) {
                free(todo);
                return conn_error(st, errstr, errstr_size);
            }
            lw_warn("Redis had lost the write script (NOSCRIPT); loaded it again");
        }
        for (size_t i = 0; i < ntodo; i++) {
            const chunk_t *c = &st->chunks[todo[i]];
            if ((err = send_raw(st, c->off, c->len, errstr, errstr_size)) != LW_OK) {
                free(todo);
                return err;
            }
        }
        size_t nnext = 0;
        for (size_t i = 0; i < ntodo; i++) {
            const chunk_t *c = &st->chunks[todo[i]];
            redisReply *r = NULL;
            if (redisGetReply(st->rc, (void **)&r) != REDIS_OK || !r) {
                free(todo);
                return conn_error(st, errstr, errstr_size);
            }
            if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
                todo[nnext++] = todo[i];
            } else if (r->type != REDIS_REPLY_ARRAY || r->elements != c->n) {
                if (err == LW_OK)
                    err = reply_error(r, "write script", errstr, errstr_size);
            } else {
                for (size_t k = 0; k < c->n; k++)
                    if (r->element[k]->type == REDIS_REPLY_INTEGER && r->element[k]->integer == 1)
                        st->slots[st->order[c->first + k]].fenced = true;
            }
            freeReplyObject(r);
        }
        ntodo = nnext;
    }
    free(todo);
    return err;
}

/* Strict fencing: one MULTI/EXEC for the whole flush, no script. The
 * epoch keys were WATCHed before the reads and checked equal to ours, so
 * EXEC runs only if no partition of the flush changed owner meanwhile.
 * MSET per chunk of borrowers; per alert fired HSET a:{..} + XADD; per
 * rule cleared the alert moves to "~rule" (HSET + HDEL). */
static bool put_cmd_hdr(lw_sbuf_t *b, int64_t argc, const char *cmd)
{
    return put_hdr(b, '*', argc) && put_str(b, cmd);
}

/* The JSON of a rule's alert as the slot's a:{..} holds it before this flush. */
/* Moves a cleared alert to "~rule" (kept, so a redelivered trigger can
 * publish it again) inside the MULTI, whatever the field holds by then. */
static const char move_script[] = "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
                                  "if v then redis.call('HSET', KEYS[1], '~' .. ARGV[1], v) "
                                  "redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

/* Queues the writes of slots [streamed, hi) in the MULTI (opened on first
 * use): one MSET of the changed borrowers, and an HGETALL a:{..} for each
 * whose repeat must hand its alerts back (their value before this write:
 * the alert operations come after every MSET). Redis parses them while the
 * rest of the batch is applied; nothing runs before EXEC. */
static lw_err_t stream_chunk(lw_store_t *st, size_t hi, char *errstr, size_t errstr_size)
{
    lw_sbuf_t *b = &st->buf;
    size_t lo = st->streamed, m = 0, nr = 0;
    st->streamed = hi;
    for (size_t i = lo; i < hi; i++) {
        const slot_t *s = &st->slots[i];
        m += s->dirty && !s->fenced;
        nr += s->replay && !s->fenced;
    }
    if (m == 0 && nr == 0)
        return LW_OK;
    b->len = 0;
    bool ok = true;
    if (st->nqueued == 0)
        ok = put_cmd_hdr(b, 1, "MULTI");
    if (m) {
        ok = ok && put_cmd_hdr(b, 1 + 2 * (int64_t)m, "MSET");
        for (size_t i = lo; ok && i < hi; i++) {
            slot_t *s = &st->slots[i];
            if (!s->dirty || s->fenced)
                continue;
            st->state.len = 0;
            ok = put_key(b, 'b', s->first->ev.borrower_id) &&
                 lw_bstate_encode(&s->st, &st->state) && put_bulk(b, st->state.p, st->state.len);
        }
        st->nqueued++;
    }
    for (size_t i = lo; ok && i < hi; i++) {
        const slot_t *s = &st->slots[i];
        if (!s->replay || s->fenced)
            continue;
        hg_ref_t *ng = lw_array_grow(st->hg, &st->hg_cap, st->nhg + 1, sizeof *ng, 64);
        if (!ng)
            return LW_ERR_NOMEM;
        st->hg = ng;
        st->hg[st->nhg++] = (hg_ref_t){st->nqueued, i};
        ok = put_cmd_hdr(b, 2, "HGETALL") && put_key(b, 'a', s->first->ev.borrower_id);
        st->nqueued++;
    }
    return ok ? send_raw(st, 0, b->len, errstr, errstr_size) : LW_ERR_NOMEM;
}

/* The end of the MULTI: per alert fired HSET a:{..} + XADD, per rule
 * cleared the move to "~rule"; then EXEC. UNWATCH when nothing was queued. */
static lw_err_t build_tail(lw_store_t *st)
{
    lw_sbuf_t *b = &st->buf;
    b->len = 0;
    bool ok = true;
    char maxlen[24];
    snprintf(maxlen, sizeof maxlen, "%" PRId64, st->opts.stream_maxlen);
    for (size_t k = 0; ok && k < st->nslots; k++) {
        const slot_t *s = &st->slots[k];
        if (!s->dirty || s->fenced || s->op_first == NONE)
            continue;
        if (st->nqueued == 0)
            ok = put_cmd_hdr(b, 1, "MULTI"); /* not reached: a changed slot was queued */
        for (size_t o = s->op_first; ok && o != NONE; o = st->ops[o].next) {
            const op_t *op = &st->ops[o];
            const lw_rule_t *r = &st->rules->rules[op->rule];
            if (op->fire) {
                const lw_event_t *ev = &st->ev[op->ev].ev;
                const char *j = st->json.p + op->json_off;
                ok = put_cmd_hdr(b, 4, "HSET") && put_key(b, 'a', s->first->ev.borrower_id) &&
                     put_str(b, r->id) && put_bulk(b, j, op->json_len);
                st->nqueued++;
                if (ok && st->opts.alert_stream) {
                    ok = put_cmd_hdr(b, 20, "XADD") && put_str(b, LW_REDIS_ALERT_STREAM) &&
                         put_str(b, "MAXLEN") && put_str(b, "~") && put_str(b, maxlen) &&
                         put_str(b, "*") && put_str(b, "alert_id") && put_str(b, op->alert_id) &&
                         put_str(b, "borrower_id") && put_str(b, s->first->ev.borrower_id) &&
                         put_str(b, "rule_id") && put_str(b, r->id) && put_str(b, "severity") &&
                         put_str(b, lw_severity_name(r->severity)) && put_str(b, "platform_id") &&
                         put_str(b, ev->platform_id) && put_str(b, "lender_id") &&
                         put_str(b, ev->lender_id) && put_str(b, "json") &&
                         put_bulk(b, j, op->json_len);
                    st->nqueued++;
                }
                continue;
            }
            ok = put_cmd_hdr(b, 5, "EVAL") && put_str(b, move_script) && put_str(b, "1") &&
                 put_key(b, 'a', s->first->ev.borrower_id) && put_str(b, r->id);
            st->nqueued++;
        }
    }
    if (ok)
        ok = st->nqueued ? put_cmd_hdr(b, 1, "EXEC") : put_cmd_hdr(b, 1, "UNWATCH");
    return ok ? LW_OK : LW_ERR_NOMEM;
}

static lw_err_t send_multi(lw_store_t *st, char *errstr, size_t errstr_size)
{
    st->aborted = false;
    lw_err_t err = send_raw(st, 0, st->buf.len, errstr, errstr_size);
    return err ? err : push_out(st, errstr, errstr_size);
}

static lw_err_t recv_multi(lw_store_t *st, char *errstr, size_t errstr_size)
{
    lw_err_t err = LW_OK;
    /* UNWATCH, or MULTI + nqueued QUEUED + EXEC */
    size_t nreplies = st->nqueued ? st->nqueued + 2 : 1;
    for (size_t i = 0; i < nreplies; i++) {
        redisReply *r = NULL;
        if (redisGetReply(st->rc, (void **)&r) != REDIS_OK || !r)
            return conn_error(st, errstr, errstr_size);
        bool last = i + 1 == nreplies;
        if (err == LW_OK) {
            if (last && st->nqueued && r->type == REDIS_REPLY_NIL)
                st->aborted = true; /* a watched epoch key moved: nothing was written */
            else if (last && st->nqueued && r->type != REDIS_REPLY_ARRAY)
                err = reply_error(r, "EXEC", errstr, errstr_size);
            else if (!last && r->type != REDIS_REPLY_STATUS)
                err = reply_error(r, "MULTI", errstr, errstr_size);
            for (size_t k = 0;
                 err == LW_OK && last && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++)
                if (r->element[k]->type == REDIS_REPLY_ERROR)
                    err = reply_error(r->element[k], "EXEC", errstr, errstr_size);
        }
        if (err == LW_OK && last && st->nqueued && r->type == REDIS_REPLY_ARRAY) {
            st->exec = r; /* holds the HGETALL replies the results hand back */
            continue;
        }
        freeReplyObject(r);
    }
    return err;
}

/* Strict: points each replayed slot at its HGETALL in the EXEC reply. */
static lw_err_t hold_alerts(lw_store_t *st, char *errstr, size_t errstr_size)
{
    for (size_t k = 0; k < st->nhg; k++) {
        const hg_ref_t *h = &st->hg[k];
        if (!st->exec || h->pos >= st->exec->elements)
            return reply_error(st->exec, "EXEC", errstr, errstr_size);
        const redisReply *r = st->exec->element[h->pos];
        if (r->type != REDIS_REPLY_ARRAY)
            return reply_error(r, "HGETALL", errstr, errstr_size);
        st->slots[h->slot].held = r;
    }
    return hand_back(st, errstr, errstr_size);
}

/* ---- Flush --------------------------------------------------------------------------- */

/* Everything up to the write: with strict fencing its replies stay unread
 * (flush_finish reads them), without it the script calls are answered here. */
static lw_err_t flush_start(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                            size_t errstr_size)
{
    lw_err_t err;
    free_alert_replies(st); /* of a flush that failed half way */
    freeReplyObject(st->exec);
    st->exec = NULL;
    st->json.len = 0;
    st->nops = 0;
    st->nalerts = 0;
    st->aborted = false;

    /* ids for new platform and lender names, before any state refers to them */
    const char **names = malloc(2 * st->n * sizeof *names);
    if (!names)
        return LW_ERR_NOMEM;
    size_t nn = 0;
    for (size_t i = 0; i < st->n; i++) {
        pending_ev_t *pe = &st->ev[i];
        if (!(pe->platform = lw_dict_id(st->dict, pe->ev.platform_id)))
            names[nn++] = pe->ev.platform_id;
        if (!(pe->lender = lw_dict_id(st->dict, pe->ev.lender_id)))
            names[nn++] = pe->ev.lender_id;
    }
    err = nn ? lw_dict_intern(st->dict, st->rc, names, nn, st->tap, errstr, errstr_size) : LW_OK;
    free(names);
    if (err == LW_ERR_TRANSIENT)
        return conn_error(st, errstr, errstr_size);
    if (err)
        return err;
    for (size_t i = 0; nn && i < st->n; i++) {
        pending_ev_t *pe = &st->ev[i];
        if (!pe->platform)
            pe->platform = lw_dict_id(st->dict, pe->ev.platform_id);
        if (!pe->lender)
            pe->lender = lw_dict_id(st->dict, pe->ev.lender_id);
    }

    if ((err = gather_slots(st)))
        return err;
    if (st->opts.strict_fencing) {
        if ((err = read_states(st, results, errstr, errstr_size)) ||
            (err = stream_chunk(st, st->nslots, errstr, errstr_size)) ||
            (err = alerts_check(st, errstr, errstr_size)) || (err = build_tail(st)) ||
            (err = send_multi(st, errstr, errstr_size))) {
            /* a MULTI left open, its QUEUED replies unread: start afresh */
            if (st->nqueued && st->rc) {
                redisFree(st->rc);
                st->rc = NULL;
            }
        }
        return err;
    }
    if ((err = read_states(st, results, errstr, errstr_size)) ||
        (err = read_alerts(st, errstr, errstr_size)) ||
        (err = alerts_check(st, errstr, errstr_size)))
        return err;
    err = build_writes(st);
    free_alert_replies(st);
    return err ? err : send_writes(st, errstr, errstr_size);
}

/* Reads the write's replies (strict) and hands the results out. */
static lw_err_t flush_finish(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                             size_t errstr_size)
{
    lw_err_t err = LW_OK;
    int64_t now;
    if (st->settled) {
        st->settled = false;
        if ((err = st->settle_err))
            snprintf(errstr, errstr_size, "%s", st->settle_errstr);
        now = st->settle_us;
    } else {
        if (st->opts.strict_fencing)
            err = recv_multi(st, errstr, errstr_size);
        now = lw_now_us();
    }
    if (err || st->aborted)
        return err; /* aborted: lw_store_flush_end() does it again */
    if (st->opts.strict_fencing && (err = hold_alerts(st, errstr, errstr_size)))
        return err;

    for (size_t i = 0; i < st->n; i++) {
        const pending_ev_t *pe = &st->ev[i];
        lw_apply_result_t *res = &results[i];
        res->ack_us = now;
        if (st->slots[pe->slot].fenced) {
            res->code = LW_APPLY_FENCED;
            continue;
        }
        for (size_t k = 0; k < pe->na && k < LW_RULES_MAX; k++) {
            const alert_ref_t *a = &st->alerts[pe->alert0 + k];
            res->alert_json[k] = st->json.p + a->off;
            res->alert_len[k] = a->len;
        }
        res->n_alerts = pe->na < LW_RULES_MAX ? pe->na : LW_RULES_MAX;
    }
    return LW_OK;
}

static lw_err_t flush_once(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                           size_t errstr_size)
{
    lw_err_t err = flush_start(st, results, errstr, errstr_size);
    return err ? err : flush_finish(st, results, errstr, errstr_size);
}

/* Reads the replies of the flush in flight now, before another command
 * goes out on the connection; lw_store_flush_end() takes the outcome. */
static void settle(lw_store_t *st)
{
    if (!st->flying || st->settled || !st->opts.strict_fencing)
        return;
    st->settle_err = recv_multi(st, st->settle_errstr, sizeof st->settle_errstr);
    st->settled = true;
    st->settle_us = lw_now_us();
}

lw_err_t lw_store_flush_begin(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                              size_t errstr_size)
{
    if (st->flying) {
        snprintf(errstr, errstr_size, "a flush is already in flight");
        return LW_ERR_INVALID_ARG;
    }
    if (st->n == 0)
        return LW_OK;
    if (!st->rc)
        return conn_error(st, errstr, errstr_size);
    st->t0 = lw_mono_us();
    st->results = results;
    lw_err_t err = flush_start(st, results, errstr, errstr_size);
    if (err == LW_OK) {
        st->flying = true;
        st->settled = false;
        return LW_OK;
    }
    if (err == LW_ERR_NOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    st->last_rtt_us = lw_mono_us() - st->t0;
    st->failed = true;
    return err;
}

lw_err_t lw_store_flush_end(lw_store_t *st, char *errstr, size_t errstr_size)
{
    if (!st->flying)
        return LW_OK; /* nothing was queued, or begin failed (and said so) */
    lw_apply_result_t *results = st->results;
    int64_t t0 = st->t0;
    lw_err_t err = flush_finish(st, results, errstr, errstr_size);
    st->flying = st->settled = false;
    /* a rebalance between our reads and EXEC: read again (now fenced, or ours) */
    for (int again = 0; err == LW_OK && st->aborted && again < 3; again++)
        err = flush_once(st, results, errstr, errstr_size);
    if (err == LW_OK && st->aborted) {
        snprintf(errstr, errstr_size, "partition epochs keep moving during the write");
        err = LW_ERR_TRANSIENT;
    }
    if (err == LW_ERR_NOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    st->last_rtt_us = lw_mono_us() - t0;
    st->last_ack_us = lw_now_us();
    if (err == LW_OK)
        lw_store_discard(st);
    else
        st->failed = true;
    return err;
}

lw_err_t lw_store_flush(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                        size_t errstr_size)
{
    lw_err_t err = lw_store_flush_begin(st, results, errstr, errstr_size);
    return err ? err : lw_store_flush_end(st, errstr, errstr_size);
}

lw_err_t lw_store_epoch_next(lw_store_t *st, const char *topic, int32_t partition, int64_t *epoch,
                             char *errstr, size_t errstr_size)
{
    settle(st);
    if (!st->rc)
        return conn_error(st, errstr, errstr_size);
    char ek[256];
    lw_epoch_key(topic, partition, ek, sizeof ek);
    redisReply *r = redisCommand(st->rc, "INCR %s", ek);
    if (!r)
        return conn_error(st, errstr, errstr_size);
    if (st->tap) {
        char *cmd = NULL;
        int len = redisFormatCommand(&cmd, "INCR %s", ek);
        if (len > 0)
            fwrite(cmd, 1, (size_t)len, st->tap);
        redisFreeCommand(cmd);
    }
    lw_err_t err = LW_OK;
    if (r->type == REDIS_REPLY_INTEGER) {
        *epoch = r->integer;
    } else {
        snprintf(errstr, errstr_size, "INCR %s: %s", ek,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        err = LW_ERR_TRANSIENT;
    }
    freeReplyObject(r);
    return err;
}
