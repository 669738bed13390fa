/*
 * store.c - the exposure store's handle: its connections to Redis, and the
 * partitions' epochs.
 *
 * lw_store_t holds what outlives a flush: the Redis URL and options, the
 * write script (built from the options, loaded at connect, called by its
 * SHA), the ids of names (dict.c), the two flushes (flush.c), and the control
 * connection - names, epochs, the caller's own commands - or on a Redis
 * Cluster the control lw_rcluster handle (store_cluster.c). Each flush
 * connects its own when it first needs it, so that one batch is read and
 * applied while Redis executes the other's write. A lost connection drops
 * them all: what was staged or sent is done again from its read. Connecting
 * forgets the ids of names, since another Redis (or one that lost data) may
 * number them differently.
 *
 * Epochs fence a consumer that lost its partition: the one that takes a
 * partition INCRs its epoch key and writes with that epoch; a write of an
 * older one is refused, by the epoch keys themselves under strict fencing
 * (store_single.c), and always by the stamp each borrower keeps of its
 * writer's epoch (borrower.c), the only check on a cluster. After a fence by
 * a stamp, lw_store_epoch_raise() lifts a key that went back below it.
 *
 * store_int.h lists the store's files.
 */
#include "store_int.h"

#include "loanwire/conf.h"
#include "loanwire/log.h"
#include "loanwire/redis.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Connection --------------------------------------------------------------- */

static redisContext *connect_one(lw_store_t *st, lw_err_t *err, char *errstr, size_t errstr_size)
{
    redisContext *rc = lw_redis_connect(&st->url, 5000, err, errstr, errstr_size);
    /* a pipeline of a whole batch can take longer than a connect should */
    if (rc)
        redisSetTimeout(rc, (struct timeval){30, 0});
    return rc;
}

/* The control connection (names, epochs, the caller's commands), with the
 * write script loaded. Each flush connects its own when it first needs it. */
static lw_err_t store_connect(lw_store_t *st, char *errstr, size_t errstr_size)
{
    lw_err_t err;
    if (st->cl) {
        /* another Redis (or one that lost data) may number names differently */
        lw_dict_clear(st->dict);
        return lw_storec_connect(st, errstr, errstr_size);
    }
    redisContext *rc = connect_one(st, &err, errstr, errstr_size);
    if (!rc)
        return err;
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

lw_err_t lw_store_ensure_conn(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_err_t err = LW_OK;
    if (st->cl)
        return lw_storec_ensure(st, f, errstr, errstr_size);
    if (!f->rc)
        f->rc = connect_one(st, &err, errstr, errstr_size);
    return err;
}

/* Drops every connection: what was staged or sent must be done again. */
static void drop_all(lw_store_t *st)
{
    redisFree(st->rc);
    st->rc = NULL;
    for (int i = 0; i < 2; i++) {
        flush_t *f = &st->fl[i];
        redisFree(f->rc);
        f->rc = NULL;
        lw_storec_drop(f);
        if (f->state != FL_QUEUE)
            f->failed = true;
    }
}

lw_err_t lw_store_conn_error(lw_store_t *st, redisContext *c, char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "Redis %s:%d: %s", st->url.host, st->url.port,
             c ? c->errstr : "not connected");
    drop_all(st);
    return LW_ERR_TRANSIENT;
}

lw_err_t lw_store_reply_error(const redisReply *r, const char *what, char *errstr,
                              size_t errstr_size)
{
    snprintf(errstr, errstr_size, "%s: unexpected reply (type %d): %s", what, r->type,
             r->type == REDIS_REPLY_ERROR ? r->str : "");
    if (r->type == REDIS_REPLY_ERROR &&
        (!strncmp(r->str, "LOADING", 7) || !strncmp(r->str, "BUSY", 4) ||
         !strncmp(r->str, "MASTERDOWN", 10) || !strncmp(r->str, "TRYAGAIN", 8)))
        return LW_ERR_TRANSIENT;
    return LW_ERR_REDIS;
}

/* ---- The handle ------------------------------------------------------------------ */

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
    /* a cluster node's URL: routed by slot, one borrower a call, fenced by
     * the borrowers' stamps (no WATCH across slots) */
    lw_rcluster_err_t ce = lw_rcluster_new(&st->url, NULL, &st->cl, errstr, errstr_size);
    if (ce) {
        if (!lw_rcluster_err_is_retriable(ce))
            goto fail;
        st->cl = NULL; /* no answer now: connect as to one Redis, which says why */
    } else if (!lw_rcluster_is_cluster(st->cl)) {
        lw_rcluster_destroy(st->cl);
        st->cl = NULL;
    } else {
        if (st->opts.strict_fencing)
            lw_info("Redis Cluster at %s:%d: writes fenced by the borrowers' stamps (no "
                    "strict fencing across slots), one hash slot's borrowers a call",
                    st->url.host, st->url.port);
        st->opts.strict_fencing = false;
    }
    /* one borrower key per call on one Redis when neither shared key is
     * declared; on a cluster a call holds one slot's borrowers (store_cluster.c) */
    if (st->opts.chunk_max)
        st->chunk_max = st->opts.chunk_max;
    else
        st->chunk_max =
            st->cl || st->opts.strict_fencing || st->opts.alert_stream ? LW_CHUNK_DEFAULT : 1;
    st->script = lw_script_build(&st->opts);
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

void lw_store_destroy(lw_store_t *st)
{
    if (!st)
        return;
    redisFree(st->rc);
    for (int i = 0; i < 2; i++)
        lw_store_flush_free(&st->fl[i]);
    lw_rcluster_destroy(st->cl);
    free(st->script);
    lw_dict_destroy(st->dict);
    lw_sbuf_free(&st->buf);
    lw_sbuf_free(&st->state);
    free(st->alerted);
    free(st);
}

lw_err_t lw_store_reconnect(lw_store_t *st, char *errstr, size_t errstr_size)
{
    drop_all(st);
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

size_t lw_store_batch_default(const lw_store_t *st)
{
    return st->cl ? LW_BATCH_CLUSTER_DEFAULT : LW_BATCH_DEFAULT;
}

int64_t lw_store_last_rtt_us(const lw_store_t *st)
{
    return st->last_rtt_us;
}

uint64_t lw_store_stale_retries(const lw_store_t *st)
{
    return st->stale_retries;
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

/* ---- Epochs and the caller's commands -------------------------------------------- */

/* KEYS[1] the epoch key, ARGV[1] ours, ARGV[2] the epoch to go above. */
static const char raise_lua[] = "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
                                "if cur ~= tonumber(ARGV[1]) then return {0, cur} end\n"
                                "local e = tonumber(ARGV[2]) + 1\n"
                                "redis.call('SET', KEYS[1], e)\n"
                                "return {1, e}\n";

/* A command on the control connection, or routed by key on a cluster; the
 * reply is the caller's. */
static lw_err_t control(lw_store_t *st, const char *key, redisReply **reply, char *errstr,
                        size_t errstr_size, const char *fmt, ...)
{
    va_list ap;
    *reply = NULL;
    if (st->cl) {
        va_start(ap, fmt);
        lw_rcluster_err_t e = lw_rcluster_vcommand(st->cl, lw_rcluster_keyslot(key, strlen(key)),
                                                   reply, errstr, errstr_size, fmt, ap);
        va_end(ap);
        return lw_storec_error(e);
    }
    if (!st->rc)
        return lw_store_conn_error(st, NULL, errstr, errstr_size);
    va_start(ap, fmt);
    *reply = redisvCommand(st->rc, fmt, ap);
    va_end(ap);
    return *reply ? LW_OK : lw_store_conn_error(st, st->rc, errstr, errstr_size);
}

lw_err_t lw_store_epoch_raise(lw_store_t *st, const char *topic, int32_t partition, int64_t ours,
                              int64_t above, bool *is_ours, int64_t *now, char *errstr,
                              size_t errstr_size)
{
    char ek[256];
    lw_epoch_key(topic, partition, ek, sizeof ek);
    redisReply *r;
    lw_err_t err = control(st, ek, &r, errstr, errstr_size, "EVAL %s 1 %s %lld %lld", raise_lua, ek,
                           (long long)ours, (long long)above);
    if (err)
        return err;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER) {
        *is_ours = r->element[0]->integer == 1;
        *now = r->element[1]->integer;
    } else {
        err = lw_store_reply_error(r, "epoch raise", errstr, errstr_size);
    }
    freeReplyObject(r);
    return err;
}

lw_err_t lw_store_epoch_next(lw_store_t *st, const char *topic, int32_t partition, int64_t *epoch,
                             char *errstr, size_t errstr_size)
{
    char ek[256];
    lw_epoch_key(topic, partition, ek, sizeof ek);
    redisReply *r;
    lw_err_t err = control(st, ek, &r, errstr, errstr_size, "INCR %s", ek);
    if (err)
        return err;
    if (st->tap) {
        char *cmd = NULL;
        int len = redisFormatCommand(&cmd, "INCR %s", ek);
        if (len > 0)
            fwrite(cmd, 1, (size_t)len, st->tap);
        redisFreeCommand(cmd);
    }
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

redisContext *lw_store_redis_for(lw_store_t *st, const char *key)
{
    char es[256];
    return st->cl ? lw_storec_context(st, key, es, sizeof es) : st->rc;
}
