/*
 * flush.c - the life cycle of a flush, the Redis side of loanwire-exposure:
 * read, decide, write back, one batch of queued events at a time.
 *
 * A flush applies the queued events in one pipelined round trip and a
 * write:
 *
 *   0. new platform and lender names, and the writers' names, get their ids
 *      (dict.c) before any state refers to them; the events are grouped by
 *      borrower;
 *   1. read: with strict fencing WATCH + MGET the partitions' epoch keys
 *      (a partition whose epoch moved on is fenced here), then MGET every
 *      distinct borrower of the batch, chunk_max to a call (a key holding
 *      another type than a string reads as absent; the write replaces it);
 *   2. apply each borrower's events in order in C (borrower.c) - the
 *      sequence rule, windows and rules - as soon as its state arrives, so
 *      this overlaps Redis answering the rest of step 1;
 *   3. write the changed borrowers with the alerts they raised and cleared,
 *      by write.lua per chunk of borrowers, each only if its key still holds
 *      the state read in 1 (compare-on-write). Strict: the calls go in one
 *      MULTI/EXEC for the batch, which writes nothing if a watched epoch key
 *      changed since step 1 (the flush is then redone and finds the fence);
 *      they are streamed into the MULTI while step 2 runs, chunk by chunk,
 *      with an HGETALL a:{..} before each for a repeated event's borrower (a
 *      repeat hands back the alerts it raised), so no extra round trip is
 *      needed. Without strict fencing: an HGETALL round trip for repeats,
 *      then the calls (Redis Cluster: a chunk is one hash slot's borrowers,
 *      store_cluster.c);
 *   4. a borrower refused by the compare (another writer changed it since
 *      1: a partition added to the topic, another topic) is read again, its
 *      events applied again and written again the same way, until none is
 *      refused; only then does the flush end (retry_stale()).
 *
 * This file says what runs when; the work on the borrowers (0, 2 and the
 * write calls) is batch.c's, and the talk with Redis store_single.c's on one
 * Redis and store_cluster.c's on a Redis Cluster.
 *
 * The steps are split so that the caller works while Redis does:
 * lw_store_flush_begin() does 1 and 2 (and the MULTI's body),
 * lw_store_flush_commit() sends the rest of 3, and lw_store_flush_end()
 * reads its replies; meanwhile the next batch can be begun. Of the store's
 * two flushes, events queue in the one neither staged nor sent.
 *
 * Only the partition's owner writes its borrowers (epochs fence the rest),
 * but a borrower can have several partitions (a topic that gained
 * partitions) or topics, hence the compare. Nothing is kept
 * between flushes: a flush that failed half way (connection lost, Redis
 * restarted) is simply done again from step 1 by the next flush of the same
 * events, and the sequence rule makes what had landed harmless. NOSCRIPT is
 * mended by loading the script again: what it refused is resent, and an EXEC
 * it refused is done again here.
 */
#include "store_int.h"

#include "loanwire/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Events queue ---------------------------------------------------------------- */

/* The flush events are queued in: the one neither staged nor sent. */
static flush_t *next_flush(lw_store_t *st)
{
    return lw_store_flush_in(st, FL_QUEUE);
}

static void flush_reset(flush_t *f)
{
    f->n = 0;
    f->failed = f->invalid = false;
    f->state = FL_QUEUE;
    f->opaque = NULL;
}

size_t lw_store_pending(const lw_store_t *st)
{
    return st->fl[0].n + st->fl[1].n;
}

/* Queues an event or an inquiry (one of ev, iq) in the flush that is
 * neither staged nor sent (a failed one starts over): LW_ERR_INVALID_ARG when
 * there is none now (one staged, one in flight: end one first). */
static lw_err_t queue(lw_store_t *st, const lw_event_t *ev, const lw_inquiry_t *iq,
                      const char *topic, int32_t partition, int64_t epoch)
{
    flush_t *f = next_flush(st);
    if (!f)
        return LW_ERR_INVALID_ARG;
    if (f->failed)
        flush_reset(f);
    pending_ev_t *ne = lw_array_grow(f->ev, &f->ncap, f->n + 1, sizeof *ne, 1024);
    if (!ne)
        return LW_ERR_NOMEM;
    f->ev = ne;
    f->ev[f->n++] =
        (pending_ev_t){.ev = ev, .iq = iq, .topic = topic, .partition = partition, .epoch = epoch};
    return LW_OK;
}

lw_err_t lw_store_append(lw_store_t *st, const lw_event_t *ev, const char *topic, int32_t partition,
                         int64_t epoch)
{
    return queue(st, ev, NULL, topic, partition, epoch);
}

lw_err_t lw_store_append_inquiry(lw_store_t *st, const lw_inquiry_t *iq, const char *topic,
                                 int32_t partition, int64_t epoch)
{
    return queue(st, NULL, iq, topic, partition, epoch);
}

void lw_store_discard(lw_store_t *st)
{
    char es[256];
    flush_t *sent = lw_store_flush_in(st, FL_SENT), *staged = lw_store_flush_in(st, FL_STAGED);
    /* a write in flight: read its replies, so its connection stays usable */
    if (sent && sent->rc && !sent->failed && st->opts.strict_fencing)
        lw_stores_recv_multi(st, sent, es, sizeof es);
    /* a staged MULTI that will never be executed */
    if (staged)
        lw_stores_drop_open_multi(staged);
    flush_reset(&st->fl[0]);
    flush_reset(&st->fl[1]);
}

/* ---- The steps ------------------------------------------------------------------- */

/* Hands the borrowers whose alerts this flush changes to the callback. */
static lw_err_t alerts_check(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    size_t n = 0;
    if (!st->alerts_cb)
        return LW_OK;
    for (size_t i = 0; i < f->nslots; i++) {
        const slot_t *s = &f->slots[i];
        if (s->fenced || s->op_first == NONE || !lw_store_in_pass(f, s))
            continue;
        const char **na = lw_array_grow(st->alerted, &st->alerted_cap, n + 1, sizeof *na, 64);
        if (!na)
            return LW_ERR_NOMEM;
        st->alerted = na;
        st->alerted[n++] = s->bid;
    }
    return n ? st->alerts_cb(st->alerts_opaque, f->opaque, st->alerted, n, errstr, errstr_size)
             : LW_OK;
}

static void free_alert_replies(flush_t *f)
{
    for (size_t i = 0; i < f->nslots; i++) {
        freeReplyObject(f->slots[i].alerts);
        f->slots[i].alerts = NULL;
    }
}

/* Names, reads and the apply; with strict fencing also the MULTI's body.
 * Nothing is written yet. */
static lw_err_t flush_stage(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_err_t err;
    free_alert_replies(f); /* of a flush that failed half way */
    freeReplyObject(f->exec);
    f->exec = NULL;
    f->json.len = 0;
    f->why.len = 0;
    f->olds.len = 0;
    f->nstale = 0;
    f->retrying = f->retried = f->noscript = false;
    f->nops = 0;
    f->alerts.n = 0;
    f->nqueued = 0;
    f->aborted = false;
    if (f->rc && (f->failed || f->invalid)) {
        /* its connection may hold a MULTI or replies nobody will read */
        redisFree(f->rc);
        f->rc = NULL;
    }
    if (!st->rc && !st->cl)
        return lw_store_conn_error(st, NULL, errstr, errstr_size);
    if ((err = lw_store_ensure_conn(st, f, errstr, errstr_size)))
        return err;

    /* ids for new platform and lender names, and for the writers' names
     * (fence stamps), before any state refers to them */
    if ((err = lw_store_intern_names(st, f, errstr, errstr_size)))
        return err;

    if ((err = lw_store_gather_slots(st, f)))
        return err;
    if (st->cl)
        return (err = lw_storec_read(st, f, errstr, errstr_size))
                   ? err
                   : lw_storec_read_alerts(st, f, errstr, errstr_size);
    if ((err = lw_stores_read(st, f, errstr, errstr_size)))
        return err;
    return st->opts.strict_fencing ? lw_stores_stream_chunk(st, f, f->nslots, errstr, errstr_size)
                                   : lw_stores_read_alerts(st, f, errstr, errstr_size);
}

/* The write, once the alerts callback lets it go: strict, the MULTI's tail
 * and EXEC, whose replies flush_finish reads; otherwise the script calls,
 * answered here. */
static lw_err_t flush_write(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_err_t err;
    if ((err = alerts_check(st, f, errstr, errstr_size)))
        return err;
    if (st->opts.strict_fencing)
        return (err = lw_stores_build_tail(st, f))
                   ? err
                   : lw_stores_send_multi(st, f, errstr, errstr_size);
    err = lw_store_build_writes(st, f);
    free_alert_replies(f);
    if (err)
        return err;
    return st->cl ? lw_storec_write_send(st, f, errstr, errstr_size)
                  : lw_stores_send_writes(st, f, errstr, errstr_size);
}

/* The borrowers whose write was refused because another writer changed them
 * after our read (write.lua's compare): each is read again, its events of
 * this flush applied again to what it holds now, and written again with the
 * same compare, until none is refused. Its first attempt wrote nothing, and
 * its results (codes, alerts) are replaced by the last attempt's, so an
 * alert is handed out once, and only when written; the caller stores no
 * offset before this returns. Another writer only refuses us by writing, so
 * each round someone progresses; after LW_STALE_ROUNDS the flush fails as
 * transient and is done again whole. */
#define LW_STALE_ROUNDS 16

static lw_err_t retry_stale(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_err_t err = LW_OK;
    for (int round = 0; f->nstale > 0 && err == LW_OK; round++) {
        if (round == LW_STALE_ROUNDS) {
            snprintf(errstr, errstr_size,
                     "%zu borrower(s) still changed by another writer after %d retries", f->nstale,
                     LW_STALE_ROUNDS);
            return LW_ERR_TRANSIENT;
        }
        st->stale_retries += f->nstale;
        f->retried = f->retrying = true;
        for (size_t i = 0; i < f->nslots; i++) {
            slot_t *s = &f->slots[i];
            s->redo = s->stale;
            s->stale = false;
            if (!s->redo)
                continue;
            s->retried = true;
            s->dirty = s->replay = s->cached = false;
            s->op_first = s->op_last = NONE;
            freeReplyObject(s->alerts);
            s->alerts = NULL;
            s->held = NULL;
        }
        f->nstale = 0;
        err = st->cl ? lw_storec_reread(st, f, errstr, errstr_size)
                     : lw_stores_reread(st, f, errstr, errstr_size);
        for (size_t i = 0; i < f->nslots && err == LW_OK; i++)
            if (f->slots[i].redo && (err = lw_store_apply_slot(st, f, i)) == LW_ERR_NOMEM)
                snprintf(errstr, errstr_size, "out of memory");
        /* only the retried borrowers hold an a:{..} reply now */
        if (err == LW_OK)
            err = lw_store_hand_back(f, errstr, errstr_size);
        free_alert_replies(f);
        for (size_t i = 0; i < f->nslots; i++)
            f->slots[i].held = NULL;
        if (err == LW_OK)
            err = alerts_check(st, f, errstr, errstr_size);
        if (err == LW_OK && st->opts.strict_fencing)
            err = lw_stores_retry_multi(st, f, errstr, errstr_size);
        else if (err == LW_OK && !(err = lw_store_build_writes(st, f)))
            err = st->cl ? lw_storec_write_send(st, f, errstr, errstr_size)
                         : lw_stores_send_writes(st, f, errstr, errstr_size);
        if (err == LW_OK && st->cl)
            err = lw_storec_write_end(st, f, errstr, errstr_size);
    }
    f->retrying = false;
    return err;
}

/* Reads the write's replies (strict) and hands the results out. */
static lw_err_t flush_finish(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_err_t err = LW_OK;
    if (st->opts.strict_fencing && (err = lw_stores_recv_multi(st, f, errstr, errstr_size)))
        return err;
    if (f->noscript && (err = lw_stores_reload_script(st, f, errstr, errstr_size)) == LW_OK)
        f->aborted = true; /* nothing was written: done again */
    f->noscript = false;
    if (err || f->aborted)
        return err; /* lw_store_flush_end() does it again */
    if (st->opts.strict_fencing && f->nqueued &&
        (err = lw_stores_exec_codes(f, f->exec, errstr, errstr_size)))
        return err;
    if (st->cl && (err = lw_storec_write_end(st, f, errstr, errstr_size)))
        return err;
    if (f->nstale && (err = retry_stale(st, f, errstr, errstr_size)))
        return err;
    if (!st->cl && st->opts.wait_replicas > 0 &&
        (err = lw_stores_wait_replicas(st, f, errstr, errstr_size)))
        return err;
    int64_t now = lw_now_us();
    if (st->opts.strict_fencing && (err = lw_stores_hold_alerts(f, errstr, errstr_size)))
        return err;
    for (size_t i = 0; i < f->n; i++) {
        const pending_ev_t *pe = &f->ev[i];
        lw_apply_result_t *res = &f->results[i];
        res->ack_us = now;
        /* pointers only now: why and alerts grew until the last retry */
        res->reason = res->code == LW_APPLY_REFUSED ? f->why.p + pe->why : "";
        res->alerts = NULL;
        res->n_alerts = 0;
        if (f->slots[pe->slot].fenced) {
            res->code = LW_APPLY_FENCED;
            res->fence_epoch = f->slots[pe->slot].fence_epoch;
            continue;
        }
        if (pe->na) {
            res->alerts = &f->alerts.v[pe->alert0];
            res->n_alerts = pe->na;
        }
    }
    return LW_OK;
}

/* The whole flush, synchronously: a redo after an abort or an error. */
static lw_err_t flush_once(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_err_t err = flush_stage(st, f, errstr, errstr_size);
    if (!err)
        err = flush_write(st, f, errstr, errstr_size);
    if (!err)
        err = flush_finish(st, f, errstr, errstr_size);
    if (err)
        lw_stores_drop_open_multi(f);
    return err;
}

static lw_err_t flush_error(flush_t *f, lw_err_t err, char *errstr, size_t errstr_size)
{
    if (err == LW_ERR_NOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    f->failed = true;
    return err;
}

/* ---- Begin, commit, end ---------------------------------------------------------- */

lw_err_t lw_store_flush_begin(lw_store_t *st, lw_apply_result_t *results, void *opaque,
                              lw_flush_t **flush, char *errstr, size_t errstr_size)
{
    flush_t *f = next_flush(st);
    *flush = NULL;
    if (!f || lw_store_flush_in(st, FL_STAGED)) {
        snprintf(errstr, errstr_size, "a flush is already staged");
        return LW_ERR_INVALID_ARG;
    }
    if (f->n == 0)
        return LW_OK;
    f->t0 = lw_mono_us();
    f->results = results;
    f->opaque = opaque;
    lw_err_t err = flush_stage(st, f, errstr, errstr_size);
    if (err) {
        lw_stores_drop_open_multi(f);
        return flush_error(f, err, errstr, errstr_size);
    }
    f->failed = f->invalid = false;
    f->state = FL_STAGED;
    *flush = f;
    return LW_OK;
}

lw_err_t lw_store_flush_commit(lw_store_t *st, lw_flush_t *f, char *errstr, size_t errstr_size)
{
    if (!f)
        return LW_OK;
    if (f->state != FL_STAGED || lw_store_flush_in(st, FL_SENT)) {
        snprintf(errstr, errstr_size, "%s",
                 f->state != FL_STAGED ? "that flush is not staged"
                                       : "the write in flight must end first");
        return LW_ERR_INVALID_ARG;
    }
    lw_err_t err = LW_OK;
    /* staged on states of a write that then failed, or its own step failed */
    if (f->failed || f->invalid)
        err = flush_stage(st, f, errstr, errstr_size);
    if (!err)
        err = flush_write(st, f, errstr, errstr_size);
    if (err)
        return flush_error(f, err, errstr, errstr_size);
    f->failed = f->invalid = false;
    f->state = FL_SENT;
    return LW_OK;
}

lw_err_t lw_store_flush_end(lw_store_t *st, lw_flush_t *f, char *errstr, size_t errstr_size)
{
    if (!f)
        return LW_OK;
    if (f->state != FL_SENT) {
        snprintf(errstr, errstr_size, "that flush was not sent");
        return LW_ERR_INVALID_ARG;
    }
    bool redone = f->failed;
    lw_err_t err =
        redone ? flush_once(st, f, errstr, errstr_size) : flush_finish(st, f, errstr, errstr_size);
    /* a rebalance between our reads and EXEC: read again (now fenced, or ours) */
    for (int again = 0; err == LW_OK && f->aborted && again < 3; again++) {
        redone = true;
        err = flush_once(st, f, errstr, errstr_size);
    }
    if (err == LW_OK && f->aborted) {
        snprintf(errstr, errstr_size, "partition epochs keep moving during the write");
        err = LW_ERR_TRANSIENT;
    }
    st->last_rtt_us = lw_mono_us() - f->t0;
    st->last_ack_us = lw_now_us();
    /* the staged flush took its states from the write as first applied */
    flush_t *staged = lw_store_flush_in(st, FL_STAGED);
    if ((err || redone || f->retried) && staged)
        staged->invalid = true;
    if (err)
        return flush_error(f, err, errstr, errstr_size);
    flush_reset(f);
    return LW_OK;
}

lw_err_t lw_store_flush(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                        size_t errstr_size)
{
    lw_err_t err = LW_OK;
    lw_flush_t *f = lw_store_flush_in(st, FL_SENT);
    if (!f && !(f = lw_store_flush_in(st, FL_STAGED)))
        err = lw_store_flush_begin(st, results, NULL, &f, errstr, errstr_size);
    if (!err && f && f->state == FL_STAGED)
        err = lw_store_flush_commit(st, f, errstr, errstr_size);
    return err ? err : lw_store_flush_end(st, f, errstr, errstr_size);
}

void lw_store_flush_free(flush_t *f)
{
    lw_storec_drop(f);
    for (size_t i = 0; i < f->slot_cap; i++) {
        freeReplyObject(f->slots[i].alerts);
        lw_bstate_free(&f->slots[i].st);
    }
    redisFree(f->rc);
    free(f->ev);
    free(f->slots);
    free(f->map);
    free(f->groups);
    free(f->ops);
    free(f->alerts.v);
    lw_sbuf_free(&f->json);
    lw_sbuf_free(&f->why);
    lw_sbuf_free(&f->olds);
    free(f->order);
    free(f->reads);
    free(f->skeys);
    free(f->scount);
    lw_reply_arena_destroy(f->ra);
    free(f->chunks);
    free(f->hg);
    freeReplyObject(f->exec);
}
