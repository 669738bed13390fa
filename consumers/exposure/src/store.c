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

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lw_store_s {
    redisContext *rc;
    lw_redis_url_t url;
    char *script;
    char sha[41];
    lw_script_opts_t opts;
    /* pending commands */
    char *buf;
    size_t len, cap;
    size_t *off; /* start of command i in buf; off[n] == len */
    size_t n, ncap;
    redisReply **replies; /* of the last flush, freed at the next one */
    size_t nreplies;
    int64_t last_rtt_us;
};

static lw_err_t store_connect(lw_store_t *st, char *errstr, size_t errstr_size)
{
    struct timeval tv = {5, 0};
    redisContext *rc;
    if (st->url.path[0])
        rc = redisConnectUnixWithTimeout(st->url.path, tv);
    else
        rc = redisConnectWithTimeout(st->url.host, st->url.port, tv);
    if (!rc || rc->err) {
        snprintf(errstr, errstr_size, "Redis %s:%d: %s",
                 st->url.path[0] ? st->url.path : st->url.host, st->url.port,
                 rc ? rc->errstr : "out of memory");
        redisFree(rc);
        return LW_ERR_TRANSIENT;
    }
    redisSetTimeout(rc, (struct timeval){30, 0});
    redisReply *r;
    if (st->url.password[0]) {
        r = redisCommand(rc, "AUTH %s", st->url.password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "Redis AUTH: %s", r ? r->str : rc->errstr);
            freeReplyObject(r);
            redisFree(rc);
            return r ? LW_ERR_REDIS : LW_ERR_TRANSIENT;
        }
        freeReplyObject(r);
    }
    if (st->url.db) {
        r = redisCommand(rc, "SELECT %d", st->url.db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "Redis SELECT %d: %s", st->url.db,
                     r ? r->str : rc->errstr);
            freeReplyObject(r);
            redisFree(rc);
            return r ? LW_ERR_REDIS : LW_ERR_TRANSIENT;
        }
        freeReplyObject(r);
    }
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
    st->script = lw_script_build(rules, opts);
    st->ncap = 1024;
    st->off = malloc((st->ncap + 1) * sizeof *st->off);
    st->cap = 256 * 1024;
    st->buf = malloc(st->cap);
    if (!st->script || !st->off || !st->buf) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    st->off[0] = 0;
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
    free(st->buf);
    free(st->off);
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

size_t lw_store_pending(const lw_store_t *st)
{
    return st->n;
}

void lw_store_discard(lw_store_t *st)
{
    st->n = 0;
    st->len = 0;
}

/* ---- RESP formatting ------------------------------------------------------ */

static bool reserve(lw_store_t *st, size_t more)
{
    if (st->len + more <= st->cap)
        return true;
    size_t nc = st->cap * 2;
    while (nc < st->len + more)
        nc *= 2;
    char *nb = realloc(st->buf, nc);
    if (!nb)
        return false;
    st->buf = nb;
    st->cap = nc;
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

static void put_bulk(lw_store_t *st, const char *s, size_t n)
{
    char *p = st->buf + st->len;
    *p++ = '$';
    p += fmt_i64(p, (int64_t)n);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, s, n);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    st->len = (size_t)(p - st->buf);
}

static void put_str(lw_store_t *st, const char *s)
{
    put_bulk(st, s, strlen(s));
}

static void put_int(lw_store_t *st, int64_t v)
{
    char tmp[24];
    put_bulk(st, tmp, fmt_i64(tmp, v));
}

lw_err_t lw_store_append(lw_store_t *st, const lw_event_t *ev, const char *topic, int32_t partition,
                         int64_t epoch)
{
    /* every string argument is bounded (ids <= 64, topic we cap), so 2 KiB is plenty */
    if (strlen(topic) > 200 || !reserve(st, 2048))
        return LW_ERR_NOMEM;
    if (st->n == st->ncap) {
        size_t *no = realloc(st->off, (st->ncap * 2 + 1) * sizeof *no);
        if (!no)
            return LW_ERR_NOMEM;
        st->off = no;
        st->ncap *= 2;
    }
    int nkeys = st->opts.strict_fencing ? 3 : st->opts.alert_stream ? 2 : 1;
    char key[LW_STATE_KEY_MAX];
    char *p = st->buf + st->len;
    *p++ = '*';
    p += fmt_i64(p, 3 + nkeys + 16);
    *p++ = '\r';
    *p++ = '\n';
    st->len = (size_t)(p - st->buf);
    put_bulk(st, "EVALSHA", 7);
    put_bulk(st, st->sha, 40);
    put_int(st, nkeys);
    lw_state_key(ev->borrower_id, key, sizeof key);
    put_str(st, key);
    if (nkeys >= 2)
        put_str(st, "lw:alerts");
    if (nkeys >= 3) {
        char ek[256];
        lw_epoch_key(topic, partition, ek, sizeof ek);
        put_str(st, ek);
    }
    put_int(st, partition);
    put_int(st, epoch);
    put_int(st, ev->event_type);
    put_str(st, ev->platform_id);
    put_str(st, ev->loan_id);
    put_str(st, ev->lender_id);
    put_int(st, ev->product);
    put_int(st, ev->sequence);
    put_int(st, ev->occurred_at);
    put_int(st, ev->outstanding_fen);
    put_int(st, ev->credit_limit_fen);
    put_int(st, ev->days_past_due);
    put_int(st, ev->past_due_fen);
    if (ev->has_annual_income)
        put_int(st, ev->annual_income_fen);
    else
        put_bulk(st, "", 0);
    put_str(st, ev->event_id);
    put_str(st, ev->borrower_id);
    st->n++;
    st->off[st->n] = st->len;
    return LW_OK;
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

static lw_err_t parse_reply(redisReply *r, lw_apply_result_t *res, char *errstr, size_t errstr_size)
{
    memset(res, 0, offsetof(lw_apply_result_t, alert_json));
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0 && r->integer <= 3) {
        res->code = (lw_apply_code_t)r->integer;
        return LW_OK;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->elements - 1 <= LW_RULES_MAX) {
        res->code = (lw_apply_code_t)r->element[0]->integer;
        for (size_t i = 1; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING)
                goto bad;
            res->alert_json[res->n_alerts] = r->element[i]->str;
            res->alert_len[res->n_alerts++] = r->element[i]->len;
        }
        return LW_OK;
    }
bad:
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
    if (!st->replies || st->ncap > 0) {
        redisReply **nr = realloc(st->replies, st->ncap * sizeof *nr);
        if (!nr)
            return LW_ERR_NOMEM;
        st->replies = nr;
    }
    /* Commands still to answer: those NOSCRIPT refused are sent again. */
    size_t *todo = malloc(st->n * sizeof *todo);
    if (!todo)
        return LW_ERR_NOMEM;
    size_t ntodo = st->n;
    for (size_t i = 0; i < st->n; i++)
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
        /* consecutive commands go out in one append */
        for (size_t i = 0; i < ntodo;) {
            size_t j = i + 1;
            while (j < ntodo && todo[j] == todo[j - 1] + 1)
                j++;
            size_t a = st->off[todo[i]], b = st->off[todo[j - 1] + 1];
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
            size_t idx = todo[i];
            if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
                freeReplyObject(r);
                todo[nnext++] = idx;
                continue;
            }
            st->replies[st->nreplies++] = r;
            if (err == LW_OK) {
                lw_err_t e = parse_reply(r, &results[idx], errstr, errstr_size);
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
    if (err == LW_OK) {
        st->n = 0;
        st->len = 0;
    }
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
