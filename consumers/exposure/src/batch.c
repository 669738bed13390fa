/*
 * batch.c - the borrowers of a flush: its events grouped by borrower, each
 * borrower's state loaded as read, its events applied in order, and the
 * write.lua calls that write the changed ones back. All of it is the same on
 * one Redis (store_single.c) and on a Redis Cluster (store_cluster.c), which
 * only move the bytes; flush.c says when each runs.
 *
 * Before anything is read, new platform and lender names and the writers'
 * names get their ids in lw:strings (dict.c): a state names them by id, and
 * a fence stamp names its writer (topic, partition) so in a byte or two.
 *
 * A borrower of the write still in flight takes the state that write leaves,
 * moved over from that flush's slot instead of read, since a read could run
 * before the write (that flush reads again if it must be redone).
 *
 * The events are applied in C (borrower.c) - the sequence rule, windows and
 * rules - one borrower at a time as soon as its state arrives: borrowers are
 * independent, so this overlaps Redis answering the rest of the reads. Only
 * the partition's owner writes its borrowers (epochs fence the rest), but a
 * borrower can have several partitions (a topic that gained partitions) or
 * topics, so each write.lua call carries, per borrower, the state its new
 * state was computed from: write.lua writes a borrower only if its key still
 * holds exactly that (compare-on-write) and answers per borrower 0 written or
 * -1 changed since read. A repeated event hands back the alerts it raised
 * before from its borrower's a:{..} (a crash may have lost their first
 * publication).
 */
#include "store_int.h"

#include "loanwire/hash.h"
#include "loanwire/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Step 0: names, and the borrowers of the flush ------------------------------- */

/* The writer of an event: its (topic, partition) as a small id, so that a
 * fence stamp names the topic too and costs a byte or two. Events come in
 * runs of one partition, so the name is formatted once a run. */
static uint32_t writer_id(const lw_dict_t *d, const pending_ev_t *pe, const pending_ev_t *prev,
                          char *name, size_t cap)
{
    if (prev && prev->writer && prev->partition == pe->partition &&
        (prev->topic == pe->topic || !strcmp(prev->topic, pe->topic)))
        return prev->writer;
    lw_writer_name(pe->topic, pe->partition, name, cap);
    return lw_dict_id(d, name);
}

lw_err_t lw_store_intern_names(lw_store_t *st, flush_t *f, char *errstr, size_t errstr_size)
{
    const char **names = malloc((2 * f->n + st->rules->n) * sizeof *names);
    char(*wn)[LW_WRITER_NAME_MAX] = NULL; /* new writers' names: a few after an assignment */
    size_t nn = 0, nw = 0, wcap = 0;
    char name[LW_WRITER_NAME_MAX];
    lw_err_t err = LW_ERR_NOMEM;
    if (!names)
        goto done;
    /* the rules' ids: known after the first flush (and after a reconnect) */
    for (size_t r = 0; r < st->rules->n; r++)
        if (!(st->rule_ids[r] = lw_dict_id(st->dict, st->rules->rules[r].id)))
            names[nn++] = st->rules->rules[r].id;
    for (size_t i = 0; i < f->n; i++) {
        pending_ev_t *pe = &f->ev[i];
        if (!(pe->platform = lw_dict_id(st->dict, pe_platform(pe))))
            names[nn++] = pe_platform(pe);
        if (!(pe->lender = lw_dict_id(st->dict, pe_lender(pe))))
            names[nn++] = pe_lender(pe);
        pe->writer = writer_id(st->dict, pe, i ? pe - 1 : NULL, name, sizeof name);
        if (!pe->writer && (nw == 0 || strcmp(wn[nw - 1], name))) {
            void *g = lw_array_grow(wn, &wcap, nw + 1, sizeof *wn, 4);
            if (!g)
                goto done;
            wn = g;
            memcpy(wn[nw++], name, sizeof name);
        }
    }
    const char **all = nw ? realloc(names, (nn + nw) * sizeof *names) : names;
    if (!all)
        goto done;
    names = all;
    for (size_t k = 0; k < nw; k++)
        names[nn++] = wn[k];
    redisContext *drc = st->rc;
    if (nn && st->cl && !(drc = lw_storec_context(st, LW_DICT_KEY, errstr, errstr_size))) {
        err = LW_ERR_TRANSIENT;
        goto done;
    }
    err = nn ? lw_dict_intern(st->dict, drc, names, nn, st->tap, errstr, errstr_size) : LW_OK;
    if (err == LW_ERR_TRANSIENT)
        err = lw_store_conn_error(st, st->rc, errstr, errstr_size);
    for (size_t r = 0; err == LW_OK && nn && r < st->rules->n; r++)
        if (!st->rule_ids[r])
            st->rule_ids[r] = lw_dict_id(st->dict, st->rules->rules[r].id);
    for (size_t i = 0; err == LW_OK && nn && i < f->n; i++) {
        pending_ev_t *pe = &f->ev[i];
        if (!pe->platform)
            pe->platform = lw_dict_id(st->dict, pe_platform(pe));
        if (!pe->lender)
            pe->lender = lw_dict_id(st->dict, pe_lender(pe));
        if (!pe->writer)
            pe->writer = writer_id(st->dict, pe, i ? pe - 1 : NULL, name, sizeof name);
    }
done:
    free(names);
    free(wn);
    return err;
}

static bool same_owner(const pending_ev_t *a, const pending_ev_t *b)
{
    return a->partition == b->partition && a->epoch == b->epoch &&
           (a->topic == b->topic || !strcmp(a->topic, b->topic));
}

/* A map entry: the high half of the borrower id's hash beside its slot's
 * index + 1, so that a probe compares ids only when the hashes agree. A
 * cluster flush's slots and events span megabytes, and a strcmp through
 * slot -> event -> id for every entry probed was a cache miss each. */
#define MAP_HASH(h) ((uint64_t)(h) & ~(uint64_t)UINT32_MAX)
#define MAP_SLOT(e) ((size_t)((e)&UINT32_MAX)) /* index + 1 */
#define MAP_MATCH(e, h, slots, id)                                                                 \
    (MAP_HASH(e) == MAP_HASH(h) && !strcmp((slots)[MAP_SLOT(e) - 1].bid, (id)))

/* The slot of borrower bid in flush c, or NULL. */
static slot_t *find_slot(const flush_t *c, uint64_t h, const char *bid)
{
    for (size_t j = h & (c->map_cap - 1); c->map[j]; j = (j + 1) & (c->map_cap - 1))
        if (MAP_MATCH(c->map[j], h, c->slots, bid))
            return &c->slots[MAP_SLOT(c->map[j]) - 1];
    return NULL;
}

/* Keeps bytes as a slot's old state (write.lua compares the key with them). */
static bool keep_old_bytes(flush_t *f, slot_t *s, const void *p, size_t n)
{
    s->old_none = false;
    s->old_off = f->olds.len;
    s->old_len = n;
    if (!lw_sbuf_reserve(&f->olds, n ? n : 1))
        return false;
    memcpy(f->olds.p + f->olds.len, p, n);
    f->olds.len += n;
    return true;
}

bool lw_store_keep_old(flush_t *f, slot_t *s, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING) {
        s->old_none = true; /* nil, or another type, which the write replaces */
        s->old_len = 0;
        return true;
    }
    return keep_old_bytes(f, s, r->str, r->len);
}

/* The old state of a borrower taken from the write in flight (cs of c): the
 * state that write leaves, as it encodes it, if it writes it; else the state
 * it read itself. If that write is refused or redone, this flush is staged
 * again from a read (lw_store_flush_end()). */
static bool cached_old(lw_store_t *st, flush_t *f, slot_t *s, const flush_t *c, const slot_t *cs)
{
    if (cs->dirty && !cs->fenced) {
        st->state.len = 0;
        return lw_bstate_encode(&s->st, &st->state) &&
               keep_old_bytes(f, s, st->state.p, st->state.len);
    }
    if (cs->old_none) {
        s->old_none = true;
        s->old_len = 0;
        return true;
    }
    return keep_old_bytes(f, s, c->olds.p + cs->old_off, cs->old_len);
}

/* Groups the events by borrower. With a write in flight (strict), a
 * borrower it holds takes the state that write leaves, moved over from its
 * slot (that flush reads again if it must be redone), instead of a read that
 * could run before the write. */
lw_err_t lw_store_gather_slots(lw_store_t *st, flush_t *f)
{
    flush_t *sent = lw_store_flush_in(st, FL_SENT);
    /* (on a cluster too: its write is sent at commit and read at end, so a
     * read of the same borrower could run before it) */
    flush_t *c =
        (st->opts.strict_fencing || st->cl) && sent && sent != f && !sent->failed ? sent : NULL;
    size_t need = 64;
    while (need < 2 * f->n)
        need *= 2;
    if (f->n >= UINT32_MAX)
        return LW_ERR_NOMEM; /* map entries hold a 32-bit index */
    if (need > f->map_cap) {
        uint64_t *nm = realloc(f->map, need * sizeof *nm);
        if (!nm)
            return LW_ERR_NOMEM;
        f->map = nm;
        f->map_cap = need;
    }
    memset(f->map, 0, f->map_cap * sizeof *f->map);
    if (f->n > f->slot_cap) {
        slot_t *ns = realloc(f->slots, f->n * sizeof *ns);
        if (!ns)
            return LW_ERR_NOMEM;
        memset(ns + f->slot_cap, 0, (f->n - f->slot_cap) * sizeof *ns);
        f->slots = ns;
        f->slot_cap = f->n;
    }
    f->nslots = 0;
    f->ngroups = 0;
    for (size_t i = 0; i < f->n; i++) {
        pending_ev_t *pe = &f->ev[i];
        const char *bid = pe_borrower(pe);
        uint64_t h = lw_hash_str(bid);
        size_t j = h & (f->map_cap - 1);
        while (f->map[j] && !MAP_MATCH(f->map[j], h, f->slots, bid))
            j = (j + 1) & (f->map_cap - 1);
        pe->next = NONE;
        if (!f->map[j]) {
            slot_t *s = &f->slots[f->nslots++];
            s->first = pe;
            memcpy(s->bid, bid, sizeof s->bid); /* both structs hold 23 bytes */
            s->bid[LW_BORROWER_ID_LEN] = '\0';
            s->ev_first = s->ev_last = i;
            s->dirty = s->fenced = s->replay = false;
            s->stale = s->redo = s->retried = false;
            s->fence_epoch = 0;
            s->op_first = s->op_last = NONE;
            s->alerts = NULL;
            s->held = NULL;
            slot_t *cs = c ? find_slot(c, h, bid) : NULL;
            s->cached = cs != NULL;
            s->hslot = st->cl ? lw_storec_slot(bid) : 0;
            if (cs) {
                lw_bstate_t t = s->st;
                s->st = cs->st;
                cs->st = t;
                if (!cached_old(st, f, s, c, cs))
                    return LW_ERR_NOMEM;
            }
            f->map[j] = MAP_HASH(h) | f->nslots;
            /* partitions are few: a linear search */
            size_t g = 0;
            while (g < f->ngroups && !same_owner(f->groups[g].first, pe))
                g++;
            if (g == f->ngroups) {
                group_t *ng = lw_array_grow(f->groups, &f->groups_cap, g + 1, sizeof *ng, 16);
                if (!ng)
                    return LW_ERR_NOMEM;
                f->groups = ng;
                f->groups[f->ngroups++] = (group_t){pe, false};
            }
            s->group = g;
        } else {
            slot_t *s = &f->slots[MAP_SLOT(f->map[j]) - 1];
            f->ev[s->ev_last].next = i;
            s->ev_last = i;
        }
        pe->slot = MAP_SLOT(f->map[j]) - 1;
        pe->na = 0;
        pe->replay = false;
    }
    return LW_OK;
}

/* ---- Step 1: read ---------------------------------------------------------------- */

/* A slot's state from its value in an MGET reply (nil: a new borrower). */
lw_err_t lw_store_load_state(slot_t *s, const redisReply *r, char *errstr, size_t errstr_size)
{
    if (r->type == REDIS_REPLY_NIL) {
        lw_bstate_reset(&s->st);
        return LW_OK;
    }
    if (r->type != REDIS_REPLY_STRING)
        return lw_store_reply_error(r, "MGET (a state)", errstr, errstr_size);
    lw_err_t e = lw_bstate_decode(&s->st, r->str, r->len);
    if (e == LW_ERR_NOMEM) {
        snprintf(errstr, errstr_size, "out of memory");
        return e;
    }
    if (e != LW_OK) {
        snprintf(errstr, errstr_size,
                 "borrower state b:{%s}: malformed value (%zu bytes; not layout version %d)",
                 s->bid, r->len, LW_STATE_VERSION);
        return LW_ERR_REDIS;
    }
    return LW_OK;
}

/* ---- Step 2: apply --------------------------------------------------------------- */

static bool add_op(flush_t *f, size_t slot, size_t ev, int rule, bool fire, size_t off, size_t len,
                   size_t alert)
{
    op_t *no = lw_array_grow(f->ops, &f->ops_cap, f->nops + 1, sizeof *no, 256);
    if (!no)
        return false;
    f->ops = no;
    op_t *o = &f->ops[f->nops];
    o->next = NONE;
    o->ev = ev;
    o->rule = rule;
    o->fire = fire;
    o->json_off = off;
    o->json_len = len;
    o->alert = alert;
    slot_t *s = &f->slots[slot];
    if (s->op_last == NONE)
        s->op_first = f->nops;
    else
        f->ops[s->op_last].next = f->nops;
    s->op_last = f->nops++;
    return true;
}

/* The JSON Redis keeps of alert a (a:{..} and the stream): rendered once from
 * the struct by the codec's field table, so it reads back as the same alert. */
static bool render_alert(flush_t *f, size_t a, size_t *off, size_t *len)
{
    if (!lw_sbuf_reserve(&f->json, LW_ALERT_JSON_MAX))
        return false;
    int n = lw_alert_to_json(&f->alerts.v[a], f->json.p + f->json.len, LW_ALERT_JSON_MAX);
    if (n < 0)
        return false;
    *off = f->json.len;
    *len = (size_t)n;
    f->json.len += (size_t)n;
    return true;
}

/* A refused event's reason, kept in the flush until its results are handed
 * out (lw_apply_result_t.reason points at it then). */
static bool add_reason(flush_t *f, pending_ev_t *pe, const char *reason)
{
    size_t n = strnlen(reason, LW_APPLY_REASON_MAX - 1);
    if (!lw_sbuf_reserve(&f->why, n + 1))
        return false;
    pe->why = f->why.len;
    memcpy(f->why.p + f->why.len, reason, n);
    f->why.p[f->why.len + n] = '\0';
    f->why.len += n + 1;
    return true;
}

/* Applies one borrower's events in order. Borrowers are independent, so
 * lw_stores_read() calls this as each state arrives, while Redis is still
 * working through the rest of the batch's reads. */
lw_err_t lw_store_apply_slot(lw_store_t *st, flush_t *f, size_t slot)
{
    lw_apply_result_t *results = f->results;
    slot_t *s = &f->slots[slot];
    /* open alerts by rule id (version 4) or position (3, 2) to mask bits */
    lw_bstate_bind(&s->st, st->rule_ids, st->rules->n);
    for (size_t i = s->ev_first; i != NONE; i = f->ev[i].next) {
        pending_ev_t *pe = &f->ev[i];
        lw_bapply_out_t o;
        results[i].fence_epoch = 0;
        if (s->fenced) {
            results[i].code = LW_APPLY_FENCED;
            pe->alert0 = f->alerts.n;
            continue;
        }
        pe->alert0 = f->alerts.n;
        lw_apply_code_t code;
        if (pe->iq) {
            code = lw_bstate_inquiry(&s->st, st->rules, pe->iq, pe->lender, pe->writer, pe->epoch,
                                     &f->alerts, &o);
        } else {
            code = lw_bstate_apply(&s->st, st->rules, pe->ev, pe->platform, pe->lender, pe->writer,
                                   pe->epoch, &f->alerts, &o);
        }
        if (o.nomem)
            return LW_ERR_NOMEM;
        results[i].code = code;
        if (code == LW_APPLY_FENCED)
            results[i].fence_epoch = s->st.fence_epoch;
        if (code == LW_APPLY_REFUSED && !add_reason(f, pe, o.reason))
            return LW_ERR_NOMEM; /* nothing changed: the consumer dead-letters it */
        if (o.changed)
            s->dirty = true;
        for (size_t k = 0; k < o.n_fired; k++) {
            size_t off, len;
            if (!render_alert(f, pe->alert0 + k, &off, &len) ||
                !add_op(f, slot, i, o.fired[k], true, off, len, pe->alert0 + k))
                return LW_ERR_NOMEM;
        }
        pe->na = o.n_fired;
        for (size_t k = 0; k < o.n_cleared; k++)
            if (!add_op(f, slot, i, o.cleared[k], false, 0, 0, NONE))
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
 * borrower's a:{..} (HGETALL, read by lw_stores_read_alerts or held in the EXEC
 * reply) whose alert id is the one this event makes for their rule. */
lw_err_t lw_store_hand_back(flush_t *f, char *errstr, size_t errstr_size)
{
    for (size_t e = 0; e < f->n; e++) {
        pending_ev_t *pe = &f->ev[e];
        const slot_t *s = &f->slots[pe->slot];
        const redisReply *r = s->alerts ? s->alerts : s->held;
        if (!pe->replay || !r)
            continue;
        size_t first = f->alerts.n;
        for (size_t k = 0; k + 1 < r->elements; k += 2) {
            const redisReply *field = r->element[k], *v = r->element[k + 1];
            if (field->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                continue;
            lw_alert_t *al =
                lw_array_grow(f->alerts.v, &f->alerts.cap, f->alerts.n + 1, sizeof *al, 16);
            if (!al) {
                snprintf(errstr, errstr_size, "out of memory");
                return LW_ERR_NOMEM;
            }
            f->alerts.v = al;
            al += f->alerts.n;
            /* stored data read back: a value that is not an alert is skipped */
            lw_field_error_t ferr;
            char rule[LW_ID_MAX + 1], id[33];
            snprintf(rule, sizeof rule, "%s", field->str[0] == '~' ? field->str + 1 : field->str);
            lw_alert_id(pe_borrower(pe), rule, pe_id(pe), id);
            if (lw_alert_from_json(v->str, v->len, al, &ferr) == LW_OK && !strcmp(al->alert_id, id))
                f->alerts.n++;
        }
        pe->alert0 = first;
        pe->na = f->alerts.n - first;
    }
    return LW_OK;
}

/* ---- Step 3: write --------------------------------------------------------------- */

/* One write.lua call for the slots idx[0..m) into b: their keys, the alert
 * stream sk, and per borrower the state it was computed from (the compare),
 * the new state and its alert operations. */
bool lw_store_put_write_call(lw_store_t *st, flush_t *f, lw_sbuf_t *b, const size_t *idx, size_t m,
                             const char *sk)
{
    int nshared = st->opts.alert_stream ? 1 : 0;
    size_t nargs = 3 + m + (size_t)nshared + 1;
    for (size_t q = 0; q < m; q++) {
        nargs += 3;
        for (size_t o = f->slots[idx[q]].op_first; o != NONE; o = f->ops[o].next)
            nargs += f->ops[o].fire ? 7 : 2;
    }
    bool ok = lw_resp_hdr(b, '*', (int64_t)nargs) && lw_resp_bulk(b, "EVALSHA", 7) &&
              lw_resp_bulk(b, st->sha, 40) && lw_resp_int(b, (int64_t)m + nshared);
    for (size_t q = 0; ok && q < m; q++) {
        if (st->cl) /* in hash-slot order: no order in memory */
            lw_storec_prefetch(f, idx, m, q);
        ok = lw_resp_key(b, 'b', f->slots[idx[q]].bid);
    }
    if (ok && nshared >= 1)
        ok = lw_resp_str(b, sk);
    ok = ok && lw_resp_int(b, (int64_t)m);
    for (size_t q = 0; ok && q < m; q++) {
        slot_t *s = &f->slots[idx[q]];
        size_t nops = 0;
        for (size_t o = s->op_first; o != NONE; o = f->ops[o].next)
            nops++;
        st->state.len = 0;
        ok = lw_resp_bulk(b, s->old_none ? "" : f->olds.p + s->old_off, s->old_len) &&
             lw_bstate_encode(&s->st, &st->state) && lw_resp_bulk(b, st->state.p, st->state.len) &&
             lw_resp_int(b, (int64_t)nops);
        for (size_t o = s->op_first; ok && o != NONE; o = f->ops[o].next) {
            const op_t *op = &f->ops[o];
            const lw_rule_t *r = &st->rules->rules[op->rule];
            if (!op->fire) {
                ok = lw_resp_bulk(b, "C", 1) && lw_resp_str(b, r->id);
                continue;
            }
            const pending_ev_t *pe = &f->ev[op->ev];
            ok = lw_resp_bulk(b, "F", 1) && lw_resp_str(b, r->id) &&
                 lw_resp_bulk(b, f->json.p + op->json_off, op->json_len) &&
                 lw_resp_str(b, f->alerts.v[op->alert].alert_id) &&
                 lw_resp_str(b, lw_severity_name(r->severity)) && lw_resp_str(b, pe_platform(pe)) &&
                 lw_resp_str(b, pe_lender(pe));
        }
    }
    return ok;
}

bool lw_store_write_codes(flush_t *f, const chunk_t *c, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != c->n)
        return false;
    for (size_t k = 0; k < c->n; k++) {
        const redisReply *e = r->element[k];
        if (e->type != REDIS_REPLY_INTEGER || (e->integer != 0 && e->integer != -1))
            return false;
    }
    for (size_t k = 0; k < c->n; k++)
        if (r->element[k]->integer == -1) {
            f->slots[f->order[c->first + k]].stale = true;
            f->nstale++;
        }
    return true;
}

/* Without strict fencing: write.lua per chunk of borrowers; on a cluster the
 * borrowers of one hash slot a chunk. In a retry, only the retried ones. */
lw_err_t lw_store_build_writes(lw_store_t *st, flush_t *f)
{
    size_t nd = 0;
    for (size_t i = 0; i < f->nslots; i++)
        nd += f->slots[i].dirty && lw_store_in_pass(f, &f->slots[i]);
    size_t *no = realloc(f->order, (nd ? nd : 1) * sizeof *no);
    chunk_t *nc = realloc(f->chunks, (nd ? nd : 1) * sizeof *nc);
    if (no)
        f->order = no;
    if (nc)
        f->chunks = nc;
    if (!no || !nc)
        return LW_ERR_NOMEM;
    /* the changed borrowers in order; on a cluster by hash slot */
    size_t k = 0;
    for (size_t i = 0; i < f->nslots; i++)
        if (f->slots[i].dirty && lw_store_in_pass(f, &f->slots[i]))
            f->order[k++] = i;
    if (st->cl && !lw_storec_by_slot(f, f->order, nd))
        return LW_ERR_NOMEM;
    st->buf.len = 0;
    f->nchunks = 0;
    for (size_t i = 0; i < nd;) {
        size_t j = st->cl ? lw_storec_run_end(f, f->order, nd, i, st->chunk_max)
                          : (nd - i < st->chunk_max ? nd : i + st->chunk_max);
        chunk_t *c = &f->chunks[f->nchunks++];
        c->off = st->buf.len;
        c->first = i;
        c->n = j - i;
        c->pos = 0;
        char sk[64];
        if (st->cl) { /* one slot a chunk, and that slot's stream */
            c->slot = f->slots[f->order[i]].hslot;
            if (!lw_storec_stream_key(c->slot, sk, sizeof sk))
                return LW_ERR_NOMEM;
        } else {
            c->slot = 0;
            snprintf(sk, sizeof sk, "%s", LW_REDIS_ALERT_STREAM);
        }
        if (!lw_store_put_write_call(st, f, &st->buf, f->order + i, j - i, sk))
            return LW_ERR_NOMEM;
        c->len = st->buf.len - c->off;
        i = j;
    }
    return LW_OK;
}
