/*
 * store_single.c - a flush's reads and writes on one Redis, over the flush's
 * own connection (f->rc); store_cluster.c does the same on a Redis Cluster.
 * What to do and when is flush.c's; the borrowers' reading, applying and
 * write calls are batch.c's, the same on both.
 *
 * A step is one pipelined round trip however many borrowers it has: its
 * commands are built as RESP in st->buf (resp.c) and handed to hiredis whole
 * (send_raw()). Step 1 is one MGET per chunk_max borrowers, each reply applied
 * as it arrives while Redis answers the rest.
 *
 * With strict fencing (the default on one Redis) the writer of each
 * partition is checked by Redis itself: step 1 begins with WATCH and an MGET
 * of the partitions' epoch keys (a partition whose epoch moved on is fenced
 * here), and the whole batch is written by one MULTI/EXEC, which writes
 * nothing if a watched epoch key changed since step 1 (the flush is then
 * redone and finds the fence). The write.lua calls are streamed into the
 * MULTI while step 2 runs, chunk by chunk, with an HGETALL a:{..} before each
 * for a repeated event's borrower (a repeat hands back the alerts it raised),
 * so no extra round trip is needed; EXEC goes out at commit and its reply is
 * read at end. Without strict fencing: an HGETALL round trip for repeats,
 * then the calls, answered at commit.
 *
 * The borrowers write.lua refused (changed by another writer since our read)
 * are read again here, state and a:{..} in one round trip (after the WATCH
 * when strict, so the retry is fenced exactly as the first write was), and
 * written again, strict in a MULTI of their own. NOSCRIPT is mended here by
 * loading the script again and resending what it refused; inside an EXEC it
 * refuses every call alike, so the flush is done again. With replicas, WAIT
 * makes a flush count as done only once enough of them have it.
 */
#include "store_int.h"

#include "loanwire/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes what hiredis holds for the connection: it would only do so when a
 * reply is asked for, and a flush in flight must reach Redis before then. */
static lw_err_t push_out(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(f->rc, &done) != REDIS_OK)
            return lw_store_conn_error(st, f->rc, errstr, errstr_size);
    return LW_OK;
}

/* Sends buf[off, off+len) (and copies it to the tap). */
static lw_err_t send_raw(lw_store_t *st, flush_t *f, size_t off, size_t len, char *errstr,
                         size_t errstr_size)
{
    if (st->tap)
        fwrite(st->buf.p + off, 1, len, st->tap);
    if (redisAppendFormattedCommand(f->rc, st->buf.p + off, len) != REDIS_OK)
        return lw_store_conn_error(st, f->rc, errstr, errstr_size);
    return LW_OK;
}

/* ---- Step 1: read ---------------------------------------------------------------- */

/* Strict fencing: WATCH the partitions' epoch keys (so a rebalance from
 * now on makes our EXEC fail) and read them (a rebalance before now fences
 * the partition here). */
static bool put_epoch_reads(lw_store_t *st, flush_t *f)
{
    lw_sbuf_t *b = &st->buf;
    char ek[256];
    for (int pass = 0; pass < 2; pass++) {
        if (!lw_resp_hdr(b, '*', 1 + (int64_t)f->ngroups) ||
            !lw_resp_str(b, pass ? "MGET" : "WATCH"))
            return false;
        for (size_t g = 0; g < f->ngroups; g++) {
            lw_epoch_key(f->groups[g].first->topic, f->groups[g].first->partition, ek, sizeof ek);
            if (!lw_resp_str(b, ek))
                return false;
        }
    }
    return true;
}

static lw_err_t check_epochs(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    redisReply *w = NULL, *m = NULL;
    if (redisGetReply(f->rc, (void **)&w) != REDIS_OK || !w ||
        redisGetReply(f->rc, (void **)&m) != REDIS_OK || !m) {
        freeReplyObject(w);
        return lw_store_conn_error(st, f->rc, errstr, errstr_size);
    }
    lw_err_t err = LW_OK;
    if (w->type != REDIS_REPLY_STATUS)
        err = lw_store_reply_error(w, "WATCH", errstr, errstr_size);
    else if (m->type != REDIS_REPLY_ARRAY || m->elements != f->ngroups)
        err = lw_store_reply_error(m, "MGET (epochs)", errstr, errstr_size);
    for (size_t g = 0; err == LW_OK && g < f->ngroups; g++) {
        const redisReply *e = m->element[g];
        long long cur = e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
        f->groups[g].fenced = f->groups[g].first->epoch < cur;
    }
    for (size_t i = 0; err == LW_OK && i < f->nslots; i++)
        if (lw_store_in_pass(f, &f->slots[i])) /* a retry: the written ones stay written */
            f->slots[i].fenced = f->groups[f->slots[i].group].fenced;
    freeReplyObject(w);
    freeReplyObject(m);
    return err;
}

/* Whether a slot's state is read: in step 1 unless it comes from the write
 * in flight (cached), in a retry only a retried one's. */
static inline bool state_read(bool retry, const slot_t *s)
{
    return retry ? s->redo : !s->cached;
}

/* The MGETs of the states read (step 1, or a retry), max keys a call, into
 * st->buf; *nkeys: how many keys in all. false: out of memory. Inline, so
 * that step 1's loops test only cached, as before they were shared (a test
 * of the pass per borrower was 0.03 % of a catch-up's instructions). */
static inline bool put_state_reads(lw_store_t *st, flush_t *f, bool retry, size_t max,
                                   size_t *nkeys)
{
    *nkeys = 0;
    for (size_t i = 0; i < f->nslots;) {
        size_t m = 0, j = i;
        for (; j < f->nslots && m < max; j++)
            m += state_read(retry, &f->slots[j]);
        if (m &&
            (!lw_resp_hdr(&st->buf, '*', 1 + (int64_t)m) || !lw_resp_bulk(&st->buf, "MGET", 4)))
            return false;
        for (; i < j; i++)
            if (state_read(retry, &f->slots[i]) && !lw_resp_key(&st->buf, 'b', f->slots[i].bid))
                return false;
        *nkeys += m;
    }
    return true;
}

/* Reads every borrower of the batch and applies its events as its state
 * arrives (step 2 runs inside step 1). */
lw_err_t lw_stores_read(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    size_t nkeys;
    st->buf.len = 0;
    f->streamed = 0;
    f->nqueued = 0;
    f->nhg = 0;
    if (st->opts.strict_fencing && !put_epoch_reads(st, f))
        return LW_ERR_NOMEM;
    /* one MGET per chunk_max borrowers: a GET each cost Redis a command's
     * parse, dispatch and reply per borrower (catch-up 9 % faster) */
    if (!put_state_reads(st, f, false, st->chunk_max, &nkeys))
        return LW_ERR_NOMEM;
    lw_err_t err = send_raw(st, f, 0, st->buf.len, errstr, errstr_size);
    if (err)
        return err;
    if (st->opts.strict_fencing &&
        (err = check_epochs(st, f, errstr, errstr_size)) == LW_ERR_TRANSIENT)
        return err;
    /* the MGET reply being worked through, built in the flush's arena (a
     * malloc and a free per value were ~3 % of the consumer's profile) */
    redisReply *mr = NULL;
    size_t u = 0; /* borrowers read so far: MGET u / chunk_max, key u % chunk_max */
    if (!f->ra && !(f->ra = lw_reply_arena_new()))
        return LW_ERR_NOMEM;
    for (size_t i = 0; i < f->nslots; i++) {
        slot_t *s = &f->slots[i];
        const redisReply *r = NULL;
        /* a cached slot holds the state the write in flight leaves */
        if (!s->cached) {
            size_t k = u++ % st->chunk_max;
            if (k == 0) {
                lw_reply_arena_reset(f->ra); /* the last MGET's states are decoded */
                mr = NULL;
                if (lw_reply_arena_get(f->ra, f->rc, &mr) != REDIS_OK || !mr)
                    return lw_store_conn_error(st, f->rc, errstr, errstr_size);
                if (err == LW_OK && mr->type != REDIS_REPLY_ARRAY)
                    err = lw_store_reply_error(mr, "MGET", errstr, errstr_size);
            }
            if (mr->type == REDIS_REPLY_ARRAY && k < mr->elements)
                r = mr->element[k];
            else if (err == LW_OK)
                err = lw_store_reply_error(mr, "MGET (too few values)", errstr, errstr_size);
        }
        if (err == LW_OK && r)
            err = lw_store_load_state(s, r, errstr, errstr_size);
        if (err == LW_OK && r && !lw_store_keep_old(f, s, r))
            err = LW_ERR_NOMEM;
        if (err == LW_OK && (err = lw_store_apply_slot(st, f, i)) == LW_ERR_NOMEM)
            snprintf(errstr, errstr_size, "out of memory");
        /* strict: queue each chunk's writes while Redis answers the rest */
        if (err == LW_OK && st->opts.strict_fencing && i + 1 - f->streamed >= st->chunk_max)
            err = lw_stores_stream_chunk(st, f, i + 1, errstr, errstr_size);
    }
    return err;
}

/* Without strict fencing: one HGETALL a:{..} round trip for the borrowers
 * with a repeated event (write.lua moves cleared alerts itself). The
 * replies stay on the slots until the flush ends. */
lw_err_t lw_stores_read_alerts(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    st->buf.len = 0;
    size_t nask = 0;
    for (size_t i = 0; i < f->nslots; i++) {
        if (!f->slots[i].replay)
            continue;
        if (!lw_resp_hdr(&st->buf, '*', 2) || !lw_resp_bulk(&st->buf, "HGETALL", 7) ||
            !lw_resp_key(&st->buf, 'a', f->slots[i].bid))
            return LW_ERR_NOMEM;
        nask++;
    }
    if (nask == 0)
        return LW_OK;
    lw_err_t err = send_raw(st, f, 0, st->buf.len, errstr, errstr_size);
    for (size_t i = 0; i < f->nslots && err == LW_OK; i++) {
        slot_t *s = &f->slots[i];
        if (!s->replay)
            continue;
        if (redisGetReply(f->rc, (void **)&s->alerts) != REDIS_OK || !s->alerts)
            return lw_store_conn_error(st, f->rc, errstr, errstr_size);
        if (s->alerts->type != REDIS_REPLY_ARRAY)
            err = lw_store_reply_error(s->alerts, "HGETALL", errstr, errstr_size);
    }
    return err ? err : lw_store_hand_back(f, errstr, errstr_size);
}

/* ---- Step 3: write --------------------------------------------------------------- */

/* Sends the chunks, reading one array of per-borrower codes each. */
lw_err_t lw_stores_send_writes(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    size_t *todo = malloc((f->nchunks ? f->nchunks : 1) * sizeof *todo);
    if (!todo)
        return LW_ERR_NOMEM;
    size_t ntodo = f->nchunks;
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
            redisReply *r = redisCommand(f->rc, "SCRIPT LOAD %s", st->script);
            bool ok = r && r->type == REDIS_REPLY_STRING;
            freeReplyObject(r);
            if (!ok) {
                free(todo);
                return lw_store_conn_error(st, f->rc, errstr, errstr_size);
            }
            lw_warn("Redis had lost the write script (NOSCRIPT); loaded it again");
        }
        for (size_t i = 0; i < ntodo; i++) {
            const chunk_t *c = &f->chunks[todo[i]];
            if ((err = send_raw(st, f, c->off, c->len, errstr, errstr_size)) != LW_OK) {
                free(todo);
                return err;
            }
        }
        size_t nnext = 0;
        for (size_t i = 0; i < ntodo; i++) {
            const chunk_t *c = &f->chunks[todo[i]];
            redisReply *r = NULL;
            if (redisGetReply(f->rc, (void **)&r) != REDIS_OK || !r) {
                free(todo);
                return lw_store_conn_error(st, f->rc, errstr, errstr_size);
            }
            if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
                todo[nnext++] = todo[i];
            } else if (!lw_store_write_codes(f, c, r) && err == LW_OK) {
                /* 0 written, -1 changed since read (lw_store_write_codes) */
                err = lw_store_reply_error(r, "write script", errstr, errstr_size);
            }
            freeReplyObject(r);
        }
        ntodo = nnext;
    }
    free(todo);
    return err;
}

/* Strict fencing: one MULTI/EXEC for the whole flush. The epoch keys were
 * WATCHed before the reads and checked equal to ours, so EXEC runs only if
 * no partition of the flush changed owner meanwhile; inside it, write.lua
 * per chunk of borrowers writes each one only if it still holds the state it
 * was read with (another writer - a partition added to the topic, another
 * topic - may have changed it; WATCHing the borrowers instead cost Redis
 * O(keys²): 62 ms for a WATCH of 2,000 keys on Redis 7.0). */
static bool put_cmd_hdr(lw_sbuf_t *b, int64_t argc, const char *cmd)
{
    return lw_resp_hdr(b, '*', argc) && lw_resp_str(b, cmd);
}

/* Queues the writes of slots [streamed, hi) in the MULTI (opened on first
 * use): an HGETALL a:{..} for each borrower whose repeat must hand its
 * alerts back (its value before this write), then one write.lua call for
 * the changed borrowers with their alert operations. hiredis sends them
 * with the next read, so Redis parses them while the rest of the batch is
 * applied; nothing runs before EXEC. In a retry, only the retried ones
 * (whose a:{..} was read beside their state). */
lw_err_t lw_stores_stream_chunk(lw_store_t *st, flush_t *f, size_t hi, char *errstr,
                                size_t errstr_size)
{
    lw_sbuf_t *b = &st->buf;
    size_t lo = f->streamed, m = 0, nr = 0;
    f->streamed = hi;
    if (lo == 0) {
        /* at most a chunk per slot, and each slot once in order */
        size_t *no = realloc(f->order, (f->nslots ? f->nslots : 1) * sizeof *no);
        chunk_t *nc = realloc(f->chunks, (f->nslots ? f->nslots : 1) * sizeof *nc);
        if (no)
            f->order = no;
        if (nc)
            f->chunks = nc;
        if (!no || !nc)
            return LW_ERR_NOMEM;
        f->nchunks = 0;
    }
    const chunk_t *last = f->nchunks ? &f->chunks[f->nchunks - 1] : NULL;
    size_t first = last ? last->first + last->n : 0;
    for (size_t i = lo; i < hi; i++) {
        const slot_t *s = &f->slots[i];
        if (s->fenced || !lw_store_in_pass(f, s))
            continue;
        if (s->dirty)
            f->order[first + m++] = i;
        nr += s->replay && !f->retrying;
    }
    if (m == 0 && nr == 0)
        return LW_OK;
    b->len = 0;
    bool ok = true;
    if (f->nqueued == 0)
        ok = put_cmd_hdr(b, 1, "MULTI");
    for (size_t i = lo; ok && nr && i < hi; i++) {
        const slot_t *s = &f->slots[i];
        if (!s->replay || s->fenced)
            continue;
        hg_ref_t *ng = lw_array_grow(f->hg, &f->hg_cap, f->nhg + 1, sizeof *ng, 64);
        if (!ng)
            return LW_ERR_NOMEM;
        f->hg = ng;
        f->hg[f->nhg++] = (hg_ref_t){f->nqueued, i};
        ok = put_cmd_hdr(b, 2, "HGETALL") && lw_resp_key(b, 'a', s->bid);
        f->nqueued++;
    }
    if (ok && m) {
        f->chunks[f->nchunks++] = (chunk_t){0, 0, first, m, 0, f->nqueued};
        ok = lw_store_put_write_call(st, f, b, f->order + first, m, LW_REDIS_ALERT_STREAM);
        f->nqueued++;
    }
    return ok ? send_raw(st, f, 0, b->len, errstr, errstr_size) : LW_ERR_NOMEM;
}

/* The end of the MULTI: EXEC (the alert operations went with each chunk's
 * write.lua call); UNWATCH when nothing was queued. */
lw_err_t lw_stores_build_tail(lw_store_t *st, flush_t *f)
{
    lw_sbuf_t *b = &st->buf;
    b->len = 0;
    bool ok = f->nqueued ? put_cmd_hdr(b, 1, "EXEC") : put_cmd_hdr(b, 1, "UNWATCH");
    return ok ? LW_OK : LW_ERR_NOMEM;
}

lw_err_t lw_stores_send_multi(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    f->aborted = false;
    lw_err_t err = send_raw(st, f, 0, st->buf.len, errstr, errstr_size);
    return err ? err : push_out(st, f, errstr, errstr_size);
}

lw_err_t lw_stores_recv_multi(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_err_t err = LW_OK;
    /* UNWATCH, or MULTI + nqueued QUEUED + EXEC */
    size_t nreplies = f->nqueued ? f->nqueued + 2 : 1;
    for (size_t i = 0; i < nreplies; i++) {
        redisReply *r = NULL;
        if (redisGetReply(f->rc, (void **)&r) != REDIS_OK || !r)
            return lw_store_conn_error(st, f->rc, errstr, errstr_size);
        bool last = i + 1 == nreplies;
        if (err == LW_OK) {
            if (last && f->nqueued && r->type == REDIS_REPLY_NIL)
                f->aborted = true; /* a watched epoch key moved: nothing was written */
            else if (last && f->nqueued && r->type != REDIS_REPLY_ARRAY)
                err = lw_store_reply_error(r, "EXEC", errstr, errstr_size);
            else if (!last && r->type != REDIS_REPLY_STATUS)
                err = lw_store_reply_error(r, "MULTI", errstr, errstr_size);
            for (size_t k = 0;
                 err == LW_OK && last && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
                const redisReply *e = r->element[k];
                /* the script cache was flushed: every write.lua call of the
                 * EXEC failed alike, so nothing was written */
                if (e->type == REDIS_REPLY_ERROR && !strncmp(e->str, "NOSCRIPT", 8))
                    f->noscript = true;
                else if (e->type == REDIS_REPLY_ERROR)
                    err = lw_store_reply_error(e, "EXEC", errstr, errstr_size);
            }
        }
        if (err == LW_OK && last && f->nqueued && r->type == REDIS_REPLY_ARRAY) {
            f->exec = r; /* holds the HGETALL replies the results hand back */
            continue;
        }
        freeReplyObject(r);
    }
    return err;
}

/* Strict: points each replayed slot at its HGETALL in the EXEC reply. */
lw_err_t lw_stores_hold_alerts(flush_t *f, char *errstr, size_t errstr_size)
{
    for (size_t k = 0; k < f->nhg; k++) {
        const hg_ref_t *h = &f->hg[k];
        if (f->slots[h->slot].retried)
            continue; /* read again and handed back by retry_stale() */
        if (!f->exec || h->pos >= f->exec->elements)
            return lw_store_reply_error(f->exec, "EXEC", errstr, errstr_size);
        const redisReply *r = f->exec->element[h->pos];
        if (r->type != REDIS_REPLY_ARRAY)
            return lw_store_reply_error(r, "HGETALL", errstr, errstr_size);
        f->slots[h->slot].held = r;
    }
    return lw_store_hand_back(f, errstr, errstr_size);
}

/* A MULTI left open, its QUEUED replies unread: the connection starts afresh. */
void lw_stores_drop_open_multi(flush_t *f)
{
    if (f->nqueued && f->rc) {
        redisFree(f->rc);
        f->rc = NULL;
    }
}

/* One Redis with replicas: the flush's writes count as done once WAIT says
 * enough replicas have them (Redis replicates asynchronously; a failover can
 * take back what only the master had, and its offsets must not move). */
lw_err_t lw_stores_wait_replicas(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    redisReply *r =
        redisCommand(f->rc, "WAIT %d %d", st->opts.wait_replicas, st->opts.wait_timeout_ms);
    if (!r)
        return lw_store_conn_error(st, f->rc, errstr, errstr_size);
    lw_err_t err = LW_OK;
    if (r->type != REDIS_REPLY_INTEGER) {
        err = lw_store_reply_error(r, "WAIT", errstr, errstr_size);
    } else if (r->integer < st->opts.wait_replicas) {
        snprintf(errstr, errstr_size, "WAIT: %lld of %d replicas have the write after %d ms",
                 r->integer, st->opts.wait_replicas, st->opts.wait_timeout_ms);
        err = LW_ERR_TRANSIENT;
    }
    freeReplyObject(r);
    return err;
}

/* ---- Step 4: borrowers changed since they were read ------------------------------ */

/* Strict: after an EXEC with NOSCRIPT answers (nothing was written), the
 * script is loaded again on the flush's connection. */
lw_err_t lw_stores_reload_script(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    redisReply *r = redisCommand(f->rc, "SCRIPT LOAD %s", st->script);
    if (!r)
        return lw_store_conn_error(st, f->rc, errstr, errstr_size);
    lw_err_t err = r->type == REDIS_REPLY_STRING
                       ? LW_OK
                       : lw_store_reply_error(r, "SCRIPT LOAD", errstr, errstr_size);
    freeReplyObject(r);
    if (err == LW_OK)
        lw_warn("Redis had lost the write script (NOSCRIPT); loaded it again");
    return err;
}

/* Strict: the write.lua answers of the EXEC reply x. */
lw_err_t lw_stores_exec_codes(flush_t *f, const redisReply *x, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < f->nchunks; i++) {
        const chunk_t *c = &f->chunks[i];
        if (!x || c->pos >= x->elements)
            return lw_store_reply_error(x, "EXEC", errstr, errstr_size);
        if (!lw_store_write_codes(f, c, x->element[c->pos]))
            return lw_store_reply_error(x->element[c->pos], "write script", errstr, errstr_size);
    }
    return LW_OK;
}

/* One Redis: the state and a:{..} of every slot being retried, in one round
 * trip; with strict fencing after WATCH and a read of the epoch keys, as in
 * step 1, so the retry's EXEC is fenced exactly as the first write was. */
lw_err_t lw_stores_reread(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    size_t m = 0;
    st->buf.len = 0;
    if (st->opts.strict_fencing && !put_epoch_reads(st, f))
        return LW_ERR_NOMEM;
    /* the few retried borrowers: one MGET */
    if (!put_state_reads(st, f, true, SIZE_MAX, &m))
        return LW_ERR_NOMEM;
    for (size_t i = 0; i < f->nslots; i++)
        if (f->slots[i].redo &&
            (!lw_resp_hdr(&st->buf, '*', 2) || !lw_resp_bulk(&st->buf, "HGETALL", 7) ||
             !lw_resp_key(&st->buf, 'a', f->slots[i].bid)))
            return LW_ERR_NOMEM;
    lw_err_t err = send_raw(st, f, 0, st->buf.len, errstr, errstr_size);
    if (err)
        return err;
    if (st->opts.strict_fencing &&
        (err = check_epochs(st, f, errstr, errstr_size)) == LW_ERR_TRANSIENT)
        return err;
    redisReply *mr = NULL;
    if (redisGetReply(f->rc, (void **)&mr) != REDIS_OK || !mr)
        return lw_store_conn_error(st, f->rc, errstr, errstr_size);
    if (err == LW_OK && (mr->type != REDIS_REPLY_ARRAY || mr->elements != m))
        err = lw_store_reply_error(mr, "MGET (retry)", errstr, errstr_size);
    for (size_t i = 0, k = 0; err == LW_OK && i < f->nslots; i++) {
        slot_t *s = &f->slots[i];
        if (!s->redo)
            continue;
        if ((err = lw_store_load_state(s, mr->element[k], errstr, errstr_size)) == LW_OK &&
            !lw_store_keep_old(f, s, mr->element[k]))
            err = LW_ERR_NOMEM;
        k++;
    }
    freeReplyObject(mr);
    for (size_t i = 0; i < f->nslots; i++) {
        slot_t *s = &f->slots[i];
        if (!s->redo)
            continue;
        if (redisGetReply(f->rc, (void **)&s->alerts) != REDIS_OK || !s->alerts)
            return lw_store_conn_error(st, f->rc, errstr, errstr_size);
        if (err == LW_OK && s->alerts->type != REDIS_REPLY_ARRAY)
            err = lw_store_reply_error(s->alerts, "HGETALL", errstr, errstr_size);
    }
    return err;
}

/* Strict: the retry's MULTI (write.lua for the retried borrowers) and EXEC.
 * The first EXEC's reply stays the flush's (lw_stores_hold_alerts() reads it). */
lw_err_t lw_stores_retry_multi(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    redisReply *first = f->exec;
    f->exec = NULL;
    f->streamed = f->nqueued = 0; /* (no HGETALL queued: lw_stores_reread() read a:{..}) */
    lw_err_t err = lw_stores_stream_chunk(st, f, f->nslots, errstr, errstr_size);
    if (!err)
        err = lw_stores_build_tail(st, f);
    if (!err)
        err = lw_stores_send_multi(st, f, errstr, errstr_size);
    if (!err)
        err = lw_stores_recv_multi(st, f, errstr, errstr_size);
    if (!err && f->noscript)
        err = lw_stores_reload_script(st, f, errstr, errstr_size);
    if (!err && (f->aborted || f->noscript)) {
        /* nothing written: all of them again (an epoch that moved shows now) */
        for (size_t i = 0; i < f->nslots; i++)
            if (f->slots[i].redo && !f->slots[i].fenced) {
                f->slots[i].stale = true;
                f->nstale++;
            }
        f->aborted = f->noscript = false;
    } else if (!err && f->nqueued) {
        err = lw_stores_exec_codes(f, f->exec, errstr, errstr_size);
    }
    freeReplyObject(f->exec);
    f->exec = first;
    return err;
}
