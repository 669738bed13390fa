/*
 * store.c - the Redis side of loanwire-exposure: one EVALSHA per event,
 * many per round trip.
 *
 * Events are formatted straight into one reusable RESP buffer (no malloc per
 * event), sent with a single write and answered in order. The buffer is kept
 * until a flush succeeds, so after a lost connection the caller reconnects
 * and flushes the same commands again: the script's sequence rule makes the
 * repeat harmless. NOSCRIPT (script cache flushed, e.g. by a restart) is
 * mended here by loading the script again and resending what it refused.
 */
#include "exposure_int.h"

#include "loanwire/conf.h"
#include "loanwire/log.h"
#include "loanwire/redis.h"

#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One queued event: its borrower key and its 4 script arguments, already in
 * RESP (bulk strings) in ev_buf, so a chunk is assembled by copying. */
typedef struct pending_ev {
    size_t off, key_len, len; /* ev_buf[off, off+key_len) key bulk, then the ARGV bulks */
    int32_t partition;
    int64_t epoch;
    const char *topic;
} pending_ev_t;

/* One EVALSHA of the pipeline: events order[first .. first+n). */
typedef struct chunk {
    size_t off, len; /* in buf */
    size_t first, n;
} chunk_t;

struct lw_store_s {
    redisContext *rc;
    lw_redis_url_t url;
    char *script;
    char sha[41];
    lw_script_opts_t opts;
    size_t chunk_max;
    /* queued events */
    char *ev_buf;
    size_t ev_len, ev_cap;
    pending_ev_t *ev;
    size_t n, ncap;
    /* the pipeline of the current flush (kept for a resend after NOSCRIPT) */
    char *buf;
    size_t len, cap;
    size_t *order; /* chunk position -> event index */
    chunk_t *chunks;
    size_t nchunks;
    bool built;
    redisReply **replies; /* of the last flush, freed at the next one */
    size_t nreplies;
    int64_t last_rtt_us;
    int64_t last_ack_us; /* wall clock when the last flush's replies were all read */
};

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
    st->opts = *opts;
    /* one borrower key per call when neither shared key is declared (Redis
     * Cluster: a call must stay in one slot) */
    if (opts->chunk_max)
        st->chunk_max = opts->chunk_max;
    else
        st->chunk_max = opts->strict_fencing || opts->alert_stream ? LW_CHUNK_DEFAULT : 1;
    st->script = lw_script_build(rules, opts);
    st->ncap = 1024;
    st->ev = malloc(st->ncap * sizeof *st->ev);
    st->order = malloc(st->ncap * sizeof *st->order);
    st->chunks = malloc(st->ncap * sizeof *st->chunks);
    st->replies = malloc(st->ncap * sizeof *st->replies);
    st->ev_cap = 256 * 1024;
    st->ev_buf = malloc(st->ev_cap);
    st->cap = 256 * 1024;
    st->buf = malloc(st->cap);
    if (!st->script || !st->ev || !st->order || !st->chunks || !st->replies || !st->ev_buf ||
        !st->buf) {
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

static void free_replies(lw_store_t *st)
{
    for (size_t i = 0; i < st->nreplies; i++)
        freeReplyObject(st->replies[i]);
    st->nreplies = 0;
}

void lw_store_destroy(lw_store_t *st)
{
    if (!st)
        return;
    free_replies(st);
    free(st->replies);
    redisFree(st->rc);
    free(st->script);
    free(st->ev_buf);
    free(st->ev);
    free(st->buf);
    free(st->order);
    free(st->chunks);
    free(st);
}

lw_err_t lw_store_reconnect(lw_store_t *st, char *errstr, size_t errstr_size)
{
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

size_t lw_store_pending(const lw_store_t *st)
{
    return st->n;
}

void lw_store_discard(lw_store_t *st)
{
    st->n = 0;
    st->ev_len = 0;
    st->len = 0;
    st->nchunks = 0;
    st->built = false;
}

/* ---- RESP formatting ------------------------------------------------------ */

static bool grow(char **buf, size_t *cap, size_t len, size_t more)
{
    if (len + more <= *cap)
        return true;
    size_t nc = *cap * 2;
    while (nc < len + more)
        nc *= 2;
    char *nb = realloc(*buf, nc);
    if (!nb)
        return false;
    *buf = nb;
    *cap = nc;
    return true;
}

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

/* Writes a RESP bulk string at p; returns the new end. The caller reserved room. */
static char *put_bulk(char *p, const void *s, size_t n)
{
    *p++ = '$';
    p += fmt_i64(p, (int64_t)n);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, s, n);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

static char *put_int(char *p, int64_t v)
{
    char tmp[24];
    return put_bulk(p, tmp, fmt_i64(tmp, v));
}

static char *put_hdr(char *p, char c, int64_t n)
{
    *p++ = c;
    p += fmt_i64(p, n);
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* Little-endian fixed-width integers, as struct.unpack('<...') reads them. */
static unsigned char *le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++, v >>= 8)
        *p++ = (unsigned char)(v & 0xff);
    return p;
}

lw_err_t lw_store_append(lw_store_t *st, const lw_event_t *ev, const char *topic, int32_t partition,
                         int64_t epoch)
{
    /* every string argument is bounded (ids <= 64), so 1 KiB is plenty */
    if (strlen(topic) > 200 || !grow(&st->ev_buf, &st->ev_cap, st->ev_len, 1024))
        return LW_ERR_NOMEM;
    if (st->built)
        lw_store_discard(st); /* appending after a failed flush starts over */
    if (st->n == st->ncap) {
        size_t nc = st->ncap * 2;
        pending_ev_t *ne = realloc(st->ev, nc * sizeof *ne);
        if (ne)
            st->ev = ne;
        size_t *no = realloc(st->order, nc * sizeof *no);
        if (no)
            st->order = no;
        chunk_t *nch = realloc(st->chunks, nc * sizeof *nch);
        if (nch)
            st->chunks = nch;
        redisReply **nr = realloc(st->replies, nc * sizeof *nr);
        if (nr)
            st->replies = nr;
        if (!ne || !no || !nch || !nr)
            return LW_ERR_NOMEM;
        st->ncap = nc;
    }
    pending_ev_t *pe = &st->ev[st->n];
    char key[LW_STATE_KEY_MAX];
    char *p0 = st->ev_buf + st->ev_len, *p = p0;
    lw_state_key(ev->borrower_id, key, sizeof key);
    p = put_bulk(p, key, strlen(key));
    pe->key_len = (size_t)(p - p0);

    unsigned char nums[80], *q = nums;
    *q++ = (unsigned char)ev->event_type;
    *q++ = (unsigned char)ev->product;
    *q++ = ev->has_annual_income ? 1 : 0;
    q = le(q, (uint64_t)ev->sequence, 8);
    q = le(q, (uint64_t)ev->occurred_at, 8);
    q = le(q, (uint64_t)ev->outstanding_fen, 8);
    q = le(q, (uint64_t)ev->credit_limit_fen, 8);
    q = le(q, (uint64_t)(int64_t)ev->days_past_due, 4);
    q = le(q, (uint64_t)ev->past_due_fen, 8);
    q = le(q, (uint64_t)(ev->has_annual_income ? ev->annual_income_fen : 0), 8);

    size_t pl = strlen(ev->platform_id), ll = strlen(ev->loan_id);
    char me[2 * LW_ID_MAX + 2];
    memcpy(me, ev->platform_id, pl);
    me[pl] = ':';
    memcpy(me + pl + 1, ev->loan_id, ll);
    /* Window entry hashes (only events that can add one): computed here, not
     * with redis.sha1hex in the script, which cost ~7 % of Redis's CPU. */
    uint64_t idh = 0, lh = 0;
    if (ev->event_type == LW_EVENT_APPLICATION || ev->event_type == LW_EVENT_CREDIT_LINE ||
        ev->event_type == LW_EVENT_DRAWDOWN) {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)me, pl + 1 + ll, md);
        for (int i = 0; i < 6; i++)
            idh = (idh << 8) | md[i];
        SHA1((const unsigned char *)ev->lender_id, strlen(ev->lender_id), md);
        for (int i = 0; i < 4; i++)
            lh = (lh << 8) | md[i];
    }
    q = le(q, idh, 6);
    q = le(q, lh, 4);
    p = put_bulk(p, nums, (size_t)(q - nums));
    p = put_bulk(p, me, pl + 1 + ll);
    p = put_bulk(p, ev->lender_id, strlen(ev->lender_id));
    p = put_bulk(p, ev->event_id, strlen(ev->event_id));
    pe->off = st->ev_len;
    pe->len = (size_t)(p - p0);
    pe->partition = partition;
    pe->epoch = epoch;
    pe->topic = topic;
    st->ev_len += pe->len;
    st->n++;
    return LW_OK;
}

static bool same_owner(const pending_ev_t *a, const pending_ev_t *b)
{
    return a->partition == b->partition && a->epoch == b->epoch &&
           (a->topic == b->topic || !strcmp(a->topic, b->topic));
}

/* Lays the queued events out as chunks: events of one (topic, partition,
 * epoch) in their order, at most chunk_max per EVALSHA. Events of different
 * partitions never share a borrower, so grouping by partition keeps each
 * borrower's order. */
static lw_err_t build(lw_store_t *st)
{
    int nshared = st->opts.strict_fencing ? 2 : st->opts.alert_stream ? 1 : 0;
    st->len = 0;
    st->nchunks = 0;
    /* stable grouping by owner: partitions come in runs, so this is ~O(n) */
    size_t no = 0;
    bool *taken = calloc(st->n ? st->n : 1, sizeof *taken);
    if (!taken)
        return LW_ERR_NOMEM;
    for (size_t i = 0; i < st->n; i++) {
        if (taken[i])
            continue;
        for (size_t j = i; j < st->n; j++)
            if (!taken[j] && same_owner(&st->ev[i], &st->ev[j])) {
                taken[j] = true;
                st->order[no++] = j;
            }
    }
    free(taken);
    for (size_t i = 0; i < st->n;) {
        const pending_ev_t *g = &st->ev[st->order[i]];
        size_t j = i + 1;
        while (j < st->n && j - i < st->chunk_max && same_owner(g, &st->ev[st->order[j]]))
            j++;
        size_t m = j - i, need = 512;
        for (size_t k = i; k < j; k++)
            need += st->ev[st->order[k]].len;
        if (!grow(&st->buf, &st->cap, st->len, need))
            return LW_ERR_NOMEM;
        chunk_t *c = &st->chunks[st->nchunks++];
        c->off = st->len;
        c->first = i;
        c->n = m;
        char *p = st->buf + st->len;
        p = put_hdr(p, '*', 3 + (int64_t)m + nshared + 3 + 4 * (int64_t)m);
        p = put_bulk(p, "EVALSHA", 7);
        p = put_bulk(p, st->sha, 40);
        p = put_int(p, (int64_t)m + nshared);
        for (size_t k = i; k < j; k++) {
            const pending_ev_t *e = &st->ev[st->order[k]];
            memcpy(p, st->ev_buf + e->off, e->key_len);
            p += e->key_len;
        }
        if (nshared >= 1)
            p = put_bulk(p, LW_REDIS_ALERT_STREAM, strlen(LW_REDIS_ALERT_STREAM));
        if (nshared >= 2) {
            char ek[256];
            lw_epoch_key(g->topic, g->partition, ek, sizeof ek);
            p = put_bulk(p, ek, strlen(ek));
        }
        p = put_int(p, g->partition);
        p = put_int(p, g->epoch);
        p = put_int(p, (int64_t)m);
        for (size_t k = i; k < j; k++) {
            const pending_ev_t *e = &st->ev[st->order[k]];
            memcpy(p, st->ev_buf + e->off + e->key_len, e->len - e->key_len);
            p += e->len - e->key_len;
        }
        st->len = (size_t)(p - st->buf);
        c->len = st->len - c->off;
        i = j;
    }
    st->built = true;
    return LW_OK;
}

const char *lw_store_pending_buf(lw_store_t *st, size_t *len)
{
    if (!st->built && build(st) != LW_OK) {
        *len = 0;
        return NULL;
    }
    *len = st->len;
    return st->buf;
}

/* ---- Flush ---------------------------------------------------------------- */

static lw_err_t conn_error(lw_store_t *st, char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "Redis %s:%d: %s", st->url.host, st->url.port,
             st->rc ? st->rc->errstr : "not connected");
    redisFree(st->rc);
    st->rc = NULL;
    return LW_ERR_TRANSIENT;
}

static lw_err_t parse_one(redisReply *r, lw_apply_result_t *res)
{
    res->code = 0;
    res->n_alerts = 0;
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0 && r->integer <= 3) {
        res->code = (lw_apply_code_t)r->integer;
        return LW_OK;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= 0 &&
        r->element[0]->integer <= 3 && r->elements - 1 <= LW_RULES_MAX) {
        res->code = (lw_apply_code_t)r->element[0]->integer;
        for (size_t i = 1; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING)
                return LW_ERR_REDIS;
            res->alert_json[res->n_alerts] = r->element[i]->str;
            res->alert_len[res->n_alerts++] = r->element[i]->len;
        }
        return LW_OK;
    }
    return LW_ERR_REDIS;
}

/* One chunk's reply: an array with one entry per event. */
static lw_err_t parse_reply(lw_store_t *st, const chunk_t *c, redisReply *r,
                            lw_apply_result_t *results, char *errstr, size_t errstr_size)
{
    if (r->type == REDIS_REPLY_ARRAY && r->elements == c->n) {
        int64_t now = lw_now_us();
        for (size_t k = 0; k < c->n; k++) {
            lw_apply_result_t *res = &results[st->order[c->first + k]];
            if (parse_one(r->element[k], res) != LW_OK) {
                snprintf(errstr, errstr_size, "apply script: unexpected reply for event %zu", k);
                return LW_ERR_REDIS;
            }
            res->ack_us = now;
        }
        return LW_OK;
    }
    snprintf(errstr, errstr_size, "apply script: unexpected reply (type %d): %s", r->type,
             r->type == REDIS_REPLY_ERROR ? r->str : "");
    if (r->type == REDIS_REPLY_ERROR &&
        (!strncmp(r->str, "LOADING", 7) || !strncmp(r->str, "BUSY", 4) ||
         !strncmp(r->str, "MASTERDOWN", 10) || !strncmp(r->str, "TRYAGAIN", 8)))
        return LW_ERR_TRANSIENT;
    return LW_ERR_REDIS;
}

lw_err_t lw_store_flush(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                        size_t errstr_size)
{
    free_replies(st);
    if (st->n == 0)
        return LW_OK;
    if (!st->rc)
        return conn_error(st, errstr, errstr_size);
    if (!st->built && build(st) != LW_OK)
        return LW_ERR_NOMEM;
    /* Chunks still to answer: those NOSCRIPT refused are sent again. */
    size_t *todo = malloc(st->nchunks * sizeof *todo);
    if (!todo)
        return LW_ERR_NOMEM;
    size_t ntodo = st->nchunks;
    for (size_t i = 0; i < st->nchunks; i++)
        todo[i] = i;
    lw_err_t err = LW_OK;
    int64_t t0 = lw_mono_us();
    for (int round = 0; ntodo > 0; round++) {
        if (round == 3) {
            snprintf(errstr, errstr_size, "Redis keeps answering NOSCRIPT");
            err = LW_ERR_TRANSIENT;
            break;
        }
        if (round > 0) {
            char es[256];
            if (store_connect(st, es, sizeof es) != LW_OK) {
                snprintf(errstr, errstr_size, "%s", es);
                err = LW_ERR_TRANSIENT;
                break;
            }
            lw_warn("Redis had lost the apply script (NOSCRIPT); loaded it again");
        }
        /* consecutive chunks go out in one append */
        for (size_t i = 0; i < ntodo;) {
            size_t j = i + 1;
            while (j < ntodo && todo[j] == todo[j - 1] + 1)
                j++;
            size_t a = st->chunks[todo[i]].off;
            size_t b = st->chunks[todo[j - 1]].off + st->chunks[todo[j - 1]].len;
            if (redisAppendFormattedCommand(st->rc, st->buf + a, b - a) != REDIS_OK) {
                free(todo);
                return conn_error(st, errstr, errstr_size);
            }
            i = j;
        }
        size_t nnext = 0;
        for (size_t i = 0; i < ntodo; i++) {
            redisReply *r = NULL;
            if (redisGetReply(st->rc, (void **)&r) != REDIS_OK || !r) {
                free(todo);
                return conn_error(st, errstr, errstr_size);
            }
            if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
                freeReplyObject(r);
                todo[nnext++] = todo[i];
                continue;
            }
            st->replies[st->nreplies++] = r;
            if (err == LW_OK) {
                lw_err_t e = parse_reply(st, &st->chunks[todo[i]], r, results, errstr, errstr_size);
                if (e != LW_OK)
                    err = e;
            }
        }
        /* the newly loaded script might have a different SHA only if the
         * text changed, which it cannot; the buffer keeps the same SHA */
        ntodo = nnext;
    }
    free(todo);
    st->last_rtt_us = lw_mono_us() - t0;
    st->last_ack_us = lw_now_us();
    if (err == LW_OK)
        lw_store_discard(st);
    return err;
}

lw_err_t lw_store_epoch_next(lw_store_t *st, const char *topic, int32_t partition, int64_t *epoch,
                             char *errstr, size_t errstr_size)
{
    if (!st->rc)
        return conn_error(st, errstr, errstr_size);
    char ek[256];
    lw_epoch_key(topic, partition, ek, sizeof ek);
    redisReply *r = redisCommand(st->rc, "INCR %s", ek);
    if (!r)
        return conn_error(st, errstr, errstr_size);
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
