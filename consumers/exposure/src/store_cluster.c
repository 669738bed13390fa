/*
 * store_cluster.c - the store's reads and writes on a Redis Cluster, routed
 * by hash slot through lw_rcluster.
 *
 * Every key of one borrower carries its hash tag ({borrower_id}), so one
 * borrower is in one slot, and the atomic unit is one slot's borrowers of a
 * flush: a flush reads the borrowers of each hash slot with one MGET in a
 * group of its own, applies the events in C exactly as on one Redis
 * (batch.c), and writes each slot's changed borrowers with one call of
 * write.lua (chunk_max of them at most, whatever their partitions), with
 * their alert stream entries on the stream of that slot, lw:alerts:{TAG}
 * (TAG from lw_rcluster_slot_tag()). Redis's cost on a cluster is per
 * command far more than per key (a script call, its replication as
 * MULTI/EXEC to the replica, the reply), so the fewer calls the better; a
 * batch of B borrowers spread over 16384 slots needs 16384 (1 - e^(-B/16384))
 * of them. All groups of a step go to every master before any reply is read;
 * MOVED, ASK, TRYAGAIN, CLUSTERDOWN and a failover are lw_rcluster's to ride
 * out, resending a group whole.
 *
 * Fencing is the borrower's stamp, checked on the state read and made sure
 * by write.lua's compare (the key still holds that state): a write by an
 * older epoch of the same (topic, partition) is refused, whenever it comes
 * (consumers/README.md, "Zombie fencing" (b)). No key can be WATCHed across
 * slots, so there is no strict mode here.
 *
 * Durability: with opts.wait_replicas a write counts as done only once every
 * master it touched says (WAIT) that many replicas have it; until then the
 * flush fails as transient and is done again, so the consumer stores no
 * offset for writes a failover could still take back.
 */
#include "store_int.h"

#include "loanwire/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lw_err_t lw_storec_error(lw_rcluster_err_t e)
{
    if (e == LW_RCLUSTER_OK)
        return LW_OK;
    if (e == LW_RCLUSTER_ERR_NOMEM)
        return LW_ERR_NOMEM;
    return lw_rcluster_err_is_retriable(e) ? LW_ERR_TRANSIENT : LW_ERR_REDIS;
}

int lw_storec_slot(const char *bid)
{
    /* the tag of "b:{bid}" is bid up to its first '}': CRC16 of that, without
     * building the key and searching it (that was 3 % of the consumer) */
    size_t n = 0;
    while (n < LW_BORROWER_ID_LEN && bid[n] && bid[n] != '}')
        n++;
    if (n > 0)
        return lw_rcluster_crc16(bid, n) & (LW_RCLUSTER_SLOTS - 1);
    char k[LW_STATE_KEY_MAX];
    return lw_rcluster_keyslot(k, lw_borrower_key('b', bid, k));
}

#define SKEY_INDEX ((UINT64_C(1) << 40) - 1)

bool lw_storec_by_slot(flush_t *f, size_t *idx, size_t n)
{
    /* a counting sort by hash slot, stable: a slot's borrowers keep their
     * order; O(n + 16384) where qsort of (slot, index) keys took n log n calls
     * of a comparison function, twice a flush (reads, writes) */
    if (!f->scount && !(f->scount = malloc((LW_RCLUSTER_SLOTS + 1) * sizeof *f->scount)))
        return false;
    uint64_t *tmp = lw_array_grow(f->skeys, &f->skeys_cap, n ? n : 1, sizeof *tmp, 256);
    if (!tmp)
        return false;
    f->skeys = tmp;
    uint32_t *cnt = f->scount;
    memset(cnt, 0, (LW_RCLUSTER_SLOTS + 1) * sizeof *cnt);
    for (size_t i = 0; i < n; i++)
        cnt[f->slots[idx[i]].hslot + 1]++;
    for (size_t s = 1; s <= LW_RCLUSTER_SLOTS; s++)
        cnt[s] += cnt[s - 1];
    /* (hash slot, index): lw_storec_run_end() reads the runs from these,
     * in order, rather than from the borrowers spread over the flush */
    for (size_t i = 0; i < n; i++)
        tmp[cnt[f->slots[idx[i]].hslot]++] = (uint64_t)f->slots[idx[i]].hslot << 40 | idx[i];
    for (size_t i = 0; i < n; i++)
        idx[i] = (size_t)(tmp[i] & SKEY_INDEX);
    f->nskeys = n;
    return true;
}

size_t lw_storec_run_end(const flush_t *f, const size_t *idx, size_t n, size_t k, size_t max)
{
    size_t j = k + 1;
    const uint64_t *key = f->skeys;
    if (n == f->nskeys && (key[k] & SKEY_INDEX) == idx[k]) { /* idx as by_slot left it */
        while (j < n && j - k < max && key[j] >> 40 == key[k] >> 40)
            j++;
        return j;
    }
    while (j < n && j - k < max && f->slots[idx[j]].hslot == f->slots[idx[k]].hslot)
        j++;
    return j;
}

size_t lw_storec_stream_key(int slot, char *buf, size_t cap)
{
    /* once per chunk: no printf */
    static const char pre[] = LW_REDIS_ALERT_STREAM ":{";
    char tag[16];
    size_t n = lw_rcluster_slot_tag(slot, tag, sizeof tag);
    if (!n || sizeof pre + n + 1 > cap)
        return 0;
    memcpy(buf, pre, sizeof pre - 1);
    memcpy(buf + sizeof pre - 1, tag, n);
    buf[sizeof pre - 1 + n] = '}';
    buf[sizeof pre + n] = '\0';
    return sizeof pre + n;
}

/* ---- Connections -------------------------------------------------------------- */

/* SCRIPT LOAD on every master (a script lives on one node; a replica promoted
 * by a failover has none until it is loaded there). */
typedef struct load_ctx {
    char sha[41];
    bool bad;
    char why[256];
} load_ctx_t;

static void load_cb(void *opaque, int master, const char *host, int port, const redisReply *r,
                    lw_rcluster_err_t err)
{
    load_ctx_t *lc = opaque;
    (void)master;
    if (r && r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(lc->sha, r->str, 40);
        lc->sha[40] = '\0';
        return;
    }
    lc->bad = true;
    snprintf(lc->why, sizeof lc->why, "SCRIPT LOAD on %s:%d: %s", host, port,
             r && r->type == REDIS_REPLY_ERROR ? r->str : lw_rcluster_err2str(err));
}

static lw_err_t load_script(lw_store_t *st, lw_rcluster_t *cl, char *errstr, size_t errstr_size)
{
    const char *argv[3] = {"SCRIPT", "LOAD", st->script};
    size_t lens[3] = {6, 4, strlen(st->script)};
    load_ctx_t lc = {{0}, false, {0}};
    lw_rcluster_err_t e =
        lw_rcluster_on_masters(cl, 3, argv, lens, load_cb, &lc, errstr, errstr_size);
    if (lc.bad)
        snprintf(errstr, errstr_size, "%s", lc.why);
    if (e || lc.bad)
        return e ? lw_storec_error(e) : LW_ERR_TRANSIENT;
    memcpy(st->sha, lc.sha, sizeof st->sha);
    return LW_OK;
}

lw_err_t lw_storec_connect(lw_store_t *st, char *errstr, size_t errstr_size)
{
    lw_rcluster_err_t e = lw_rcluster_refresh(st->cl, errstr, errstr_size);
    if (e)
        return lw_storec_error(e);
    return load_script(st, st->cl, errstr, errstr_size);
}

lw_err_t lw_storec_ensure(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    if (!f->cl) {
        lw_rcluster_opts_t o;
        lw_rcluster_opts_init(&o);
        o.timeout_ms = 30000; /* a whole batch's pipeline, as on one Redis */
        lw_rcluster_err_t e = lw_rcluster_new(&st->url, &o, &f->cl, errstr, errstr_size);
        if (e)
            return lw_storec_error(e);
    }
    if (!f->bat && !(f->bat = lw_rcluster_batch_new(f->cl))) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    return LW_OK;
}

void lw_storec_drop(flush_t *f)
{
    lw_rcluster_batch_destroy(f->bat);
    f->bat = NULL;
    lw_rcluster_destroy(f->cl);
    f->cl = NULL;
}

redisContext *lw_storec_context(lw_store_t *st, const char *key, char *errstr, size_t errstr_size)
{
    int m = lw_rcluster_slot_master(st->cl, lw_rcluster_keyslot(key, strlen(key)));
    if (m < 0) {
        snprintf(errstr, errstr_size, "no master serves the slot of %s", key);
        return NULL;
    }
    return lw_rcluster_master_context(st->cl, m, errstr, errstr_size);
}

/* ---- A flush ------------------------------------------------------------------ */

/* Sends the batch's groups and reads every reply (redirected and retried
 * inside lw_rcluster). */
static lw_err_t run_batch(flush_t *f, char *errstr, size_t errstr_size)
{
    lw_rcluster_err_t e = lw_rcluster_batch_send(f->bat, errstr, errstr_size);
    if (!e)
        e = lw_rcluster_batch_recv(f->bat, errstr, errstr_size);
    return lw_storec_error(e);
}

/* A group of one command on one key of a borrower ("GET b:{id}",
 * "HGETALL a:{id}"), in the borrower's slot, built as RESP. */
static bool key_group(lw_store_t *st, flush_t *f, const char *cmd, char prefix, const char *bid)
{
    st->buf.len = 0;
    return lw_resp_hdr(&st->buf, '*', 2) && lw_resp_str(&st->buf, cmd) &&
           lw_resp_key(&st->buf, prefix, bid) &&
           lw_rcluster_batch_group(f->bat, lw_storec_slot(bid)) >= 0 &&
           lw_rcluster_batch_append_resp(f->bat, st->buf.p, st->buf.len) == LW_RCLUSTER_OK;
}

/*
 * A flush's borrowers are read, applied and written in hash-slot order, which
 * is no order in memory: a borrower's slot, its first event's entry and its
 * state's loans are each a cache miss where first touched (a 100,000-event
 * batch spans tens of megabytes). Asking for them ahead, the slot 16
 * borrowers before its turn and what it points to 8 before (the slot has
 * arrived by then), overlaps those misses with the work on the borrowers in
 * between. Asking for the caller's event too, 4 before, measured the same
 * (2.69 vs 2.72 us an event, 3 runs each), so it is not done.
 */
#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

void lw_storec_prefetch(const flush_t *f, const size_t *idx, size_t n, size_t q)
{
    if (q + 16 < n)
        PREFETCH(&f->slots[idx[q + 16]]);
    if (q + 8 < n) {
        const slot_t *s = &f->slots[idx[q + 8]];
        PREFETCH(&f->ev[s->ev_first]);
        PREFETCH(s->bid);
        if (s->st.loans) {
            PREFETCH(s->st.loans);
            PREFETCH((const char *)s->st.loans + 64);
            PREFETCH((const char *)s->st.loans + 128);
        }
    }
}

lw_err_t lw_storec_read(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_rcluster_batch_reset(f->bat);
    /* a borrower of the write in flight takes the state it leaves (cached),
     * not a read that could run before it; the rest by hash slot, one MGET a
     * slot (built as RESP here: hiredis's formatter was an eighth of the
     * consumer's instructions on a cluster) */
    size_t nr = 0;
    size_t *rd = lw_array_grow(f->reads, &f->reads_cap, f->nslots ? f->nslots : 1, sizeof *rd, 256);
    if (!rd)
        return LW_ERR_NOMEM;
    f->reads = rd;
    for (size_t i = 0; i < f->nslots; i++)
        if (!f->slots[i].cached)
            rd[nr++] = i;
    if (!lw_storec_by_slot(f, rd, nr))
        return LW_ERR_NOMEM;
    for (size_t k = 0; k < nr;) {
        size_t j = lw_storec_run_end(f, rd, nr, k, st->chunk_max);
        st->buf.len = 0;
        bool ok =
            lw_resp_hdr(&st->buf, '*', 1 + (int64_t)(j - k)) && lw_resp_bulk(&st->buf, "MGET", 4);
        for (size_t q = k; ok && q < j; q++) {
            lw_storec_prefetch(f, rd, nr, q);
            ok = lw_resp_key(&st->buf, 'b', f->slots[rd[q]].bid);
        }
        if (!ok || lw_rcluster_batch_group(f->bat, f->slots[rd[k]].hslot) < 0 ||
            lw_rcluster_batch_append_resp(f->bat, st->buf.p, st->buf.len) != LW_RCLUSTER_OK)
            return LW_ERR_NOMEM;
        k = j;
    }
    lw_err_t err = nr ? run_batch(f, errstr, errstr_size) : LW_OK;
    for (size_t k = 0, g = 0; k < nr && err == LW_OK; g++) {
        size_t j = lw_storec_run_end(f, rd, nr, k, st->chunk_max);
        const redisReply *r = lw_rcluster_group_reply(f->bat, g, 0);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != j - k) {
            if (r)
                return lw_store_reply_error(r, "MGET (states of a slot)", errstr, errstr_size);
            snprintf(errstr, errstr_size, "MGET b:{%s}...: no reply", f->slots[rd[k]].bid);
            return LW_ERR_TRANSIENT;
        }
        for (size_t q = k; q < j && err == LW_OK; q++) {
            lw_storec_prefetch(f, rd, nr, q);
            if ((err = lw_store_load_state(&f->slots[rd[q]], r->element[q - k], errstr,
                                           errstr_size)) != LW_OK)
                break;
            if (!lw_store_keep_old(f, &f->slots[rd[q]], r->element[q - k]))
                return LW_ERR_NOMEM;
            if ((err = lw_store_apply_slot(st, f, rd[q])) == LW_ERR_NOMEM)
                snprintf(errstr, errstr_size, "out of memory");
        }
        k = j;
    }
    for (size_t i = 0; i < f->nslots && err == LW_OK; i++)
        if (f->slots[i].cached && (err = lw_store_apply_slot(st, f, i)) == LW_ERR_NOMEM)
            snprintf(errstr, errstr_size, "out of memory");
    return err;
}

lw_err_t lw_storec_reread(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    /* rare (a borrower another writer changed meanwhile): a group per key */
    lw_rcluster_batch_reset(f->bat);
    size_t n = 0;
    for (size_t i = 0; i < f->nslots; i++) {
        const char *bid = f->slots[i].bid;
        if (!f->slots[i].redo)
            continue;
        if (!key_group(st, f, "GET", 'b', bid) || !key_group(st, f, "HGETALL", 'a', bid))
            return LW_ERR_NOMEM;
        n++;
    }
    lw_err_t err = n ? run_batch(f, errstr, errstr_size) : LW_OK;
    for (size_t i = 0, g = 0; i < f->nslots && err == LW_OK; i++) {
        slot_t *s = &f->slots[i];
        if (!s->redo)
            continue;
        const redisReply *r = lw_rcluster_group_reply(f->bat, g++, 0);
        s->held = lw_rcluster_group_reply(f->bat, g++, 0);
        if (!r || !s->held) {
            snprintf(errstr, errstr_size, "b:{%s}: no reply", s->bid);
            return LW_ERR_TRANSIENT;
        }
        if (s->held->type != REDIS_REPLY_ARRAY)
            return lw_store_reply_error(s->held, "HGETALL", errstr, errstr_size);
        if ((err = lw_store_load_state(s, r, errstr, errstr_size)) == LW_OK &&
            !lw_store_keep_old(f, s, r))
            err = LW_ERR_NOMEM;
    }
    return err;
}

lw_err_t lw_storec_read_alerts(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_rcluster_batch_reset(f->bat);
    size_t nask = 0;
    for (size_t i = 0; i < f->nslots; i++) {
        if (!f->slots[i].replay)
            continue;
        if (!key_group(st, f, "HGETALL", 'a', f->slots[i].bid))
            return LW_ERR_NOMEM;
        nask++;
    }
    if (nask == 0)
        return LW_OK;
    lw_err_t err = run_batch(f, errstr, errstr_size);
    for (size_t i = 0, g = 0; i < f->nslots && err == LW_OK; i++) {
        slot_t *s = &f->slots[i];
        if (!s->replay)
            continue;
        /* borrowed from the batch, read by lw_store_hand_back() below */
        s->held = lw_rcluster_group_reply(f->bat, g++, 0);
        if (!s->held || s->held->type != REDIS_REPLY_ARRAY)
            err = s->held ? lw_store_reply_error(s->held, "HGETALL", errstr, errstr_size)
                          : LW_ERR_TRANSIENT;
    }
    if (err == LW_OK)
        err = lw_store_hand_back(f, errstr, errstr_size);
    for (size_t i = 0; i < f->nslots; i++)
        f->slots[i].held = NULL;
    return err;
}

lw_err_t lw_storec_write_send(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    lw_rcluster_batch_reset(f->bat);
    for (size_t i = 0; i < f->nchunks; i++) {
        const chunk_t *c = &f->chunks[i];
        if (st->tap)
            fwrite(st->buf.p + c->off, 1, c->len, st->tap);
        if (lw_rcluster_batch_group(f->bat, c->slot) < 0 ||
            lw_rcluster_batch_append_resp(f->bat, st->buf.p + c->off, c->len))
            return LW_ERR_NOMEM;
    }
    return f->nchunks ? lw_storec_error(lw_rcluster_batch_send(f->bat, errstr, errstr_size))
                      : LW_OK;
}

lw_err_t lw_storec_write_end(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    if (!f->nchunks)
        return LW_OK;
    lw_err_t err = lw_storec_error(lw_rcluster_batch_recv(f->bat, errstr, errstr_size));
    bool noscript = false;
    for (size_t i = 0; i < f->nchunks && err == LW_OK; i++) {
        const chunk_t *c = &f->chunks[i];
        const redisReply *r = lw_rcluster_group_reply(f->bat, i, 0);
        if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
            noscript = true;
        } else if (!lw_store_write_codes(f, c, r)) {
            /* 0 written, -1 changed since read: marked stale, retried by the store */
            err =
                r ? lw_store_reply_error(r, "write script", errstr, errstr_size) : LW_ERR_TRANSIENT;
        }
    }
    /* a master promoted by a failover has no script: load it everywhere and
     * have the flush done again (its writes are idempotent) */
    if (err == LW_OK && noscript) {
        if ((err = load_script(st, f->cl, errstr, errstr_size)) == LW_OK) {
            lw_warn("a master had lost the write script (NOSCRIPT: a failover?); loaded it "
                    "again, the batch is redone");
            snprintf(errstr, errstr_size,
                     "NOSCRIPT on a master; the write script was loaded "
                     "again");
            err = LW_ERR_TRANSIENT;
        }
    }
    /* the writes on replicas too, before any offset moves */
    if (err == LW_OK && st->opts.wait_replicas > 0)
        err = lw_storec_error(lw_rcluster_batch_wait(
            f->bat, st->opts.wait_replicas, st->opts.wait_timeout_ms, errstr, errstr_size));
    return err;
}
