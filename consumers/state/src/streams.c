/*
 * streams.c - the alert streams read in time order (loanwire/streams.h): a
 * k-way merge by entry id over per-stream buffers, filled in rounds by a
 * fetch callback, and the callback that reads the streams through
 * lw_rcluster.
 *
 * Why a merge of its own rather than "read everything and sort": on a cluster
 * there is one stream per hash slot, 16384 of them, each up to MAXLEN long;
 * the newest hundred alerts are a few entries of a few hundred streams. The
 * merge reads one page per stream to learn where each stands, then only what
 * the order needs: a stream is read further only while its frontier (the last
 * id fetched) could still hide an entry that comes before the best one in
 * hand. The cost is therefore one command per stream for the first round plus
 * a few small rounds, and the bytes are one page per non-empty stream plus
 * about twice what is handed out.
 *
 * The handing-out loop scans the live streams (those not yet at their end or
 * still holding buffered entries) for the best head: O(live) per entry, a few
 * milliseconds for 1000 entries over 16384 live streams, far below the round
 * trips, and no heap to keep consistent across refills.
 */
#include "loanwire/streams.h"

#include "loanwire/conf.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LW_SPAGE_MAX 1000 /* the largest COUNT a refill asks for */

bool lw_sid_parse(const char *s, size_t len, lw_sid_t *out)
{
    uint64_t v[2] = {0, 0};
    int part = 0;
    size_t digits = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '-' && part == 0 && digits > 0) {
            part = 1;
            digits = 0;
            continue;
        }
        if (c < '0' || c > '9' || digits >= 19) /* 19 digits always fit in 64 bits */
            return false;
        v[part] = v[part] * 10 + (uint64_t)(c - '0');
        digits++;
    }
    if (part != 1 || digits == 0)
        return false;
    out->ms = v[0];
    out->seq = v[1];
    return true;
}

int lw_sid_cmp(lw_sid_t a, lw_sid_t b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

/* ---- The merge -------------------------------------------------------------- */

typedef struct sent {
    lw_sid_t id;
    const void *p;
} sent_t;

typedef struct sstream {
    sent_t *buf; /* buffered entries buf[head .. n) */
    size_t head, n, cap;
    lw_sfrom_t mode; /* where the next page starts: LW_SFROM_AFTER the frontier once fetched */
    lw_sid_t from;
    bool fetched; /* asked at least once since the start */
    bool at_end;  /* its last page came back short */
    size_t page;  /* COUNT of its next refill */
} sstream_t;

struct lw_smerge {
    size_t ns;
    sstream_t *s;
    bool reverse;
    lw_smerge_fetch_fn fetch;
    void *opaque;
    size_t first_page, hint;
    size_t *live; /* streams not (at_end and empty), in index order */
    size_t nlive;
    lw_smerge_req_t *reqs; /* the round in progress */
    size_t *got;
    size_t rounds, pages;
};

/* (a, sa) comes strictly before (b, sb) in the merge's order: by id, then by
 * stream index, so a reverse merge gives exactly the forward order backwards
 * (a page read newest first and turned round equals one read oldest first). */
static bool before(const lw_smerge_t *m, lw_sid_t a, size_t sa, lw_sid_t b, size_t sb)
{
    int c = lw_sid_cmp(a, b);
    if (c == 0)
        c = sa < sb ? -1 : sa > sb;
    return m->reverse ? c > 0 : c < 0;
}

/* id lies strictly beyond `from` in the merge's direction. */
static bool beyond(const lw_smerge_t *m, lw_sid_t id, lw_sid_t from)
{
    int c = lw_sid_cmp(id, from);
    return m->reverse ? c < 0 : c > 0;
}

lw_smerge_t *lw_smerge_new(size_t nstreams, bool reverse, lw_smerge_fetch_fn fetch, void *opaque)
{
    if (nstreams == 0 || !fetch)
        return NULL;
    lw_smerge_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->ns = nstreams;
    m->reverse = reverse;
    m->fetch = fetch;
    m->opaque = opaque;
    m->first_page = 1;
    m->hint = 1;
    m->s = calloc(nstreams, sizeof *m->s);
    m->live = malloc(nstreams * sizeof *m->live);
    m->reqs = malloc(nstreams * sizeof *m->reqs);
    m->got = malloc(nstreams * sizeof *m->got);
    if (!m->s || !m->live || !m->reqs || !m->got) {
        lw_smerge_destroy(m);
        return NULL;
    }
    for (size_t i = 0; i < nstreams; i++)
        m->live[i] = i;
    m->nlive = nstreams;
    return m;
}

void lw_smerge_destroy(lw_smerge_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; m->s && i < m->ns; i++)
        free(m->s[i].buf);
    free(m->s);
    free(m->live);
    free(m->reqs);
    free(m->got);
    free(m);
}

void lw_smerge_start(lw_smerge_t *m, lw_sfrom_t mode, lw_sid_t from)
{
    for (size_t i = 0; i < m->ns; i++) {
        m->s[i].mode = mode;
        m->s[i].from = from;
    }
}

void lw_smerge_start_stream(lw_smerge_t *m, size_t i, lw_sfrom_t mode, lw_sid_t from)
{
    if (i < m->ns) {
        m->s[i].mode = mode;
        m->s[i].from = from;
    }
}

void lw_smerge_first_page(lw_smerge_t *m, size_t count)
{
    m->first_page = count ? count : 1;
}

void lw_smerge_hint(lw_smerge_t *m, size_t hint)
{
    m->hint = hint ? hint : 1;
}

size_t lw_smerge_rounds(const lw_smerge_t *m)
{
    return m->rounds;
}

size_t lw_smerge_pages(const lw_smerge_t *m)
{
    return m->pages;
}

bool lw_smerge_put(lw_smerge_t *m, size_t i, lw_sid_t id, const void *payload)
{
    sstream_t *s = &m->s[m->reqs[i].stream];
    /* a page must move forward from where it was asked to start */
    if (s->mode == LW_SFROM_AFTER && !beyond(m, id, s->from))
        return false;
    if (s->mode == LW_SFROM_INCL && beyond(m, s->from, id))
        return false;
    if (s->n == s->cap) {
        if (s->head > 0) { /* slide down what is left before growing */
            memmove(s->buf, s->buf + s->head, (s->n - s->head) * sizeof *s->buf);
            s->n -= s->head;
            s->head = 0;
        }
        if (s->n == s->cap) {
            size_t nc = s->cap ? 2 * s->cap : 4;
            sent_t *nb = realloc(s->buf, nc * sizeof *nb);
            if (!nb)
                return false;
            s->buf = nb;
            s->cap = nc;
        }
    }
    s->buf[s->n++] = (sent_t){id, payload};
    s->mode = LW_SFROM_AFTER;
    s->from = id;
    m->got[i]++;
    return true;
}

static size_t buffered(const sstream_t *s)
{
    return s->n - s->head;
}

/* A stream's head, copied for sorting: qsort's comparator takes no context,
 * and the query server runs merges on several threads at once. */
typedef struct shead {
    lw_sid_t id;
    size_t s;
} shead_t;

static int shead_cmp(const shead_t *x, const shead_t *y)
{
    int c = lw_sid_cmp(x->id, y->id);
    return c ? c : x->s < y->s ? -1 : x->s > y->s;
}

/* Oldest first (a forward merge's best first), and newest first. */
static int head_fwd(const void *a, const void *b)
{
    return shead_cmp(a, b);
}

static int head_rev(const void *a, const void *b)
{
    return shead_cmp(b, a);
}

/*
 * One round: the streams in need[0..nneed) (blocked: the merge cannot go on
 * without them), plus those whose head is among the next `hint` and whose
 * buffer is nearly dry, so they do not block one at a time later.
 */
static lw_err_t refill(lw_smerge_t *m, const size_t *need, size_t nneed, char *errstr,
                       size_t errstr_size)
{
    size_t nreq = 0;
    for (size_t k = 0; k < nneed; k++)
        m->reqs[nreq++].stream = need[k];

    /* the prefetch: streams with a head among the `hint` best heads */
    shead_t *heads = malloc((m->nlive ? m->nlive : 1) * sizeof *heads);
    size_t nh = 0;
    if (!heads) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    for (size_t k = 0; k < m->nlive; k++) {
        const sstream_t *s = &m->s[m->live[k]];
        if (buffered(s) > 0)
            heads[nh++] = (shead_t){s->buf[s->head].id, m->live[k]};
    }
    if (nh > m->hint) {
        qsort(heads, nh, sizeof *heads, m->reverse ? head_rev : head_fwd);
        nh = m->hint;
    }
    for (size_t k = 0; k < nh; k++) {
        const sstream_t *s = &m->s[heads[k].s];
        if (!s->at_end && buffered(s) < 2)
            m->reqs[nreq++].stream = heads[k].s;
    }
    free(heads);

    for (size_t i = 0; i < nreq; i++) {
        sstream_t *s = &m->s[m->reqs[i].stream];
        m->reqs[i].mode = s->mode;
        m->reqs[i].from = s->from;
        m->reqs[i].count = s->fetched ? s->page : m->first_page;
        m->got[i] = 0;
    }
    m->rounds++;
    m->pages += nreq;
    lw_err_t err = m->fetch(m->opaque, m, m->reqs, nreq, errstr, errstr_size);
    if (err != LW_OK)
        return err;
    for (size_t i = 0; i < nreq; i++) {
        sstream_t *s = &m->s[m->reqs[i].stream];
        s->at_end = m->got[i] < m->reqs[i].count;
        /* twice the last page: a stream that keeps being needed is read in
         * ever larger pages (a hot stream, or one stream on a single Redis) */
        s->page = 2 * m->reqs[i].count;
        if (s->page > LW_SPAGE_MAX)
            s->page = LW_SPAGE_MAX;
        s->fetched = true;
    }
    return LW_OK;
}

lw_err_t lw_smerge_next(lw_smerge_t *m, const lw_sid_t *bound, lw_sid_t *id, size_t *stream,
                        const void **payload, bool *end, char *errstr, size_t errstr_size)
{
    *end = false;
    for (;;) {
        /* the best buffered head; streams done for good leave the live list */
        size_t best = SIZE_MAX, nl = 0;
        for (size_t k = 0; k < m->nlive; k++) {
            size_t i = m->live[k];
            const sstream_t *s = &m->s[i];
            if (s->at_end && buffered(s) == 0)
                continue;
            m->live[nl++] = i;
            if (buffered(s) > 0 &&
                (best == SIZE_MAX ||
                 before(m, s->buf[s->head].id, i, m->s[best].buf[m->s[best].head].id, best)))
                best = i;
        }
        m->nlive = nl;
        const sent_t *e = best == SIZE_MAX ? NULL : &m->s[best].buf[m->s[best].head];

        /* streams that may still hold an entry before e: dry, not at their
         * end, never asked, or with a frontier e does not reach */
        size_t nneed = 0;
        for (size_t k = 0; k < m->nlive; k++) {
            size_t i = m->live[k];
            const sstream_t *s = &m->s[i];
            if (s->at_end || buffered(s) > 0)
                continue;
            if (!s->fetched || !e || beyond(m, e->id, s->from))
                m->reqs[nneed++].stream = i; /* refill() copies before overwriting */
        }
        if (nneed > 0) {
            size_t *need = malloc(nneed * sizeof *need);
            if (!need) {
                snprintf(errstr, errstr_size, "out of memory");
                return LW_ERR_NOMEM;
            }
            for (size_t k = 0; k < nneed; k++)
                need[k] = m->reqs[k].stream;
            lw_err_t err = refill(m, need, nneed, errstr, errstr_size);
            free(need);
            if (err != LW_OK)
                return err;
            continue;
        }
        if (!e || (bound && !before(m, e->id, SIZE_MAX, *bound, SIZE_MAX))) {
            *end = true;
            return LW_OK;
        }
        *id = e->id;
        if (stream)
            *stream = best;
        *payload = e->p;
        m->s[best].head++;
        if (m->s[best].head == m->s[best].n)
            m->s[best].head = m->s[best].n = 0;
        return LW_OK;
    }
}

void lw_smerge_rearm(lw_smerge_t *m)
{
    for (size_t i = 0; i < m->ns; i++)
        m->s[i].at_end = false;
    for (size_t i = 0; i < m->ns; i++)
        m->live[i] = i;
    m->nlive = m->ns;
}

/* ---- The alert streams through lw_rcluster ------------------------------------ */

size_t lw_alert_streams_count(const lw_rcluster_t *cl)
{
    return lw_rcluster_is_cluster(cl) ? LW_RCLUSTER_SLOTS : 1;
}

/* The 16384 per-slot stream keys, spelt once per process: a reader asks for
 * all of them on every call, and formatting them each time was a fifth of
 * /v1/alerts' CPU. */
#define LW_STREAM_KEY_MAX 32
static char g_keys[LW_RCLUSTER_SLOTS][LW_STREAM_KEY_MAX];
static uint8_t g_key_len[LW_RCLUSTER_SLOTS];
static pthread_once_t g_keys_once = PTHREAD_ONCE_INIT;

static void keys_fill(void)
{
    for (int i = 0; i < LW_RCLUSTER_SLOTS; i++) {
        char tag[16];
        int n = 0;
        /* the spelling of lw_storec_stream_key(), the writer's */
        if (lw_rcluster_slot_tag(i, tag, sizeof tag))
            n = snprintf(g_keys[i], LW_STREAM_KEY_MAX, "%s:{%s}", LW_REDIS_ALERT_STREAM, tag);
        g_key_len[i] = n > 0 && n < LW_STREAM_KEY_MAX ? (uint8_t)n : 0;
    }
}

/* Stream i's key, borrowed; its length in *len (0: none). */
static const char *stream_key(const lw_rcluster_t *cl, size_t i, size_t *len)
{
    if (i >= lw_alert_streams_count(cl)) {
        *len = 0;
        return "";
    }
    if (!lw_rcluster_is_cluster(cl)) {
        *len = strlen(LW_REDIS_ALERT_STREAM);
        return LW_REDIS_ALERT_STREAM;
    }
    pthread_once(&g_keys_once, keys_fill);
    *len = g_key_len[i];
    return g_keys[i];
}

size_t lw_alert_stream_key(const lw_rcluster_t *cl, size_t i, char *buf, size_t cap)
{
    size_t n;
    const char *k = stream_key(cl, i, &n);
    if (n == 0 || n >= cap)
        return 0;
    memcpy(buf, k, n + 1);
    return n;
}

int lw_alert_stream_slot(const lw_rcluster_t *cl, size_t i)
{
    if (lw_rcluster_is_cluster(cl))
        return (int)i;
    return lw_rcluster_keyslot(LW_REDIS_ALERT_STREAM, strlen(LW_REDIS_ALERT_STREAM));
}

typedef struct lw_clock {
    uint64_t min_ms;
    bool bad;
} lw_clock_t;

static void time_cb(void *opaque, int master, const char *host, int port, const redisReply *r,
                    lw_rcluster_err_t err)
{
    lw_clock_t *ck = opaque;
    (void)master;
    (void)host;
    (void)port;
    (void)err;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        ck->bad = true;
        return;
    }
    uint64_t ms = strtoull(r->element[0]->str, NULL, 10) * 1000 +
                  strtoull(r->element[1]->str, NULL, 10) / 1000;
    if (ms < ck->min_ms)
        ck->min_ms = ms;
}

lw_err_t lw_alert_streams_clock(lw_rcluster_t *cl, uint64_t *ms, char *errstr, size_t errstr_size)
{
    static const char *argv[] = {"TIME"};
    static const size_t argl[] = {4};
    lw_clock_t ck = {UINT64_MAX, false};
    lw_rcluster_err_t ce =
        lw_rcluster_on_masters(cl, 1, argv, argl, time_cb, &ck, errstr, errstr_size);
    if (ce != LW_RCLUSTER_OK) {
        /* a master changed or died: look at the map again before the retry */
        lw_rcluster_refresh(cl, NULL, 0);
        return LW_ERR_REDIS;
    }
    if (ck.bad || ck.min_ms == UINT64_MAX) {
        snprintf(errstr, errstr_size, "redis TIME: unexpected reply");
        return LW_ERR_REDIS;
    }
    *ms = ck.min_ms;
    return LW_OK;
}

/* One round's replies and the entries handed to the merge from them. */
typedef struct am_round {
    struct am_round *next;
    lw_rcluster_batch_t *bat;
    struct am_ent *ents;
    size_t live; /* entries not handed out yet */
} am_round_t;

typedef struct am_ent {
    const redisReply *e;
    am_round_t *r;
} am_ent_t;

struct lw_alert_merge {
    lw_rcluster_t *cl;
    lw_smerge_t *m;
    bool reverse;
    am_round_t *rounds;
};

static void round_free(am_round_t *r)
{
    lw_rcluster_batch_destroy(r->bat);
    free(r->ents);
    free(r);
}

/* A range bound as XRANGE takes it: "-", "+", "<ms>-<seq>" or "(<ms>-<seq>". */
static void range_arg(char *buf, size_t cap, lw_sfrom_t mode, lw_sid_t from, const char *open)
{
    if (mode == LW_SFROM_OPEN)
        snprintf(buf, cap, "%s", open);
    else
        snprintf(buf, cap, "%s%" PRIu64 "-%" PRIu64, mode == LW_SFROM_AFTER ? "(" : "", from.ms,
                 from.seq);
}

static lw_err_t am_fetch(void *opaque, lw_smerge_t *m, const lw_smerge_req_t *reqs, size_t n,
                         char *errstr, size_t errstr_size)
{
    lw_alert_merge_t *am = opaque;
    am_round_t *r = calloc(1, sizeof *r);
    if (!r || !(r->bat = lw_rcluster_batch_new(am->cl))) {
        free(r);
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    r->next = am->rounds;
    am->rounds = r;
    const char *cmd = am->reverse ? "XREVRANGE" : "XRANGE";
    char start[48] = "", cnt[24] = "";
    for (size_t i = 0; i < n; i++) {
        size_t kl;
        const char *key = stream_key(am->cl, reqs[i].stream, &kl);
        /* a round mostly asks every stream the same: format only changes */
        if (i == 0 || reqs[i].mode != reqs[i - 1].mode ||
            lw_sid_cmp(reqs[i].from, reqs[i - 1].from) != 0)
            range_arg(start, sizeof start, reqs[i].mode, reqs[i].from, am->reverse ? "+" : "-");
        if (i == 0 || reqs[i].count != reqs[i - 1].count)
            snprintf(cnt, sizeof cnt, "%zu", reqs[i].count);
        const char *argv[] = {cmd, key, start, am->reverse ? "-" : "+", "COUNT", cnt};
        size_t argl[] = {strlen(cmd), kl, strlen(start), 1, 5, strlen(cnt)};
        if (kl == 0 ||
            lw_rcluster_batch_group(r->bat, lw_alert_stream_slot(am->cl, reqs[i].stream)) < 0 ||
            lw_rcluster_batch_append_argv(r->bat, 6, argv, argl) != LW_RCLUSTER_OK) {
            snprintf(errstr, errstr_size, "out of memory");
            return LW_ERR_NOMEM;
        }
    }
    char why[256] = "";
    lw_rcluster_err_t ce = lw_rcluster_batch_send(r->bat, why, sizeof why);
    if (!ce)
        ce = lw_rcluster_batch_recv(r->bat, why, sizeof why);
    if (ce) {
        snprintf(errstr, errstr_size, "redis %s of the alert streams: %s", cmd,
                 why[0] ? why : lw_rcluster_err2str(ce));
        return ce == LW_RCLUSTER_ERR_NOMEM ? LW_ERR_NOMEM : LW_ERR_REDIS;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *g = lw_rcluster_group_reply(r->bat, i, 0);
        if (!g || g->type != REDIS_REPLY_ARRAY) {
            char key[64];
            lw_alert_stream_key(am->cl, reqs[i].stream, key, sizeof key);
            snprintf(errstr, errstr_size, "redis %s %s: %s", cmd, key,
                     g && g->type == REDIS_REPLY_ERROR ? g->str : "unexpected reply");
            return LW_ERR_REDIS;
        }
        total += g->elements;
    }
    if (total && !(r->ents = calloc(total, sizeof *r->ents))) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *g = lw_rcluster_group_reply(r->bat, i, 0);
        for (size_t j = 0; j < g->elements; j++) {
            const redisReply *e = g->element[j];
            lw_sid_t id;
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING ||
                !lw_sid_parse(e->element[0]->str, e->element[0]->len, &id))
                continue; /* not a stream entry: nothing to order it by */
            r->ents[k] = (am_ent_t){e, r};
            if (lw_smerge_put(m, i, id, &r->ents[k])) {
                r->live++;
                k++;
            }
        }
    }
    return LW_OK;
}

lw_alert_merge_t *lw_alert_merge_new(lw_rcluster_t *cl, bool reverse)
{
    if (!cl)
        return NULL;
    lw_alert_merge_t *am = calloc(1, sizeof *am);
    if (!am)
        return NULL;
    am->cl = cl;
    am->reverse = reverse;
    am->m = lw_smerge_new(lw_alert_streams_count(cl), reverse, am_fetch, am);
    if (!am->m) {
        free(am);
        return NULL;
    }
    return am;
}

lw_smerge_t *lw_alert_merge_engine(lw_alert_merge_t *am)
{
    return am->m;
}

lw_err_t lw_alert_merge_next(lw_alert_merge_t *am, const lw_sid_t *bound, lw_sid_t *id,
                             size_t *stream, const redisReply **entry, bool *end, char *errstr,
                             size_t errstr_size)
{
    /* rounds whose every entry was handed out (the caller is done with the
     * last one by now) */
    for (am_round_t **pp = &am->rounds; *pp;) {
        am_round_t *r = *pp;
        if (r->live == 0) {
            *pp = r->next;
            round_free(r);
        } else {
            pp = &r->next;
        }
    }
    const void *p = NULL;
    lw_err_t err = lw_smerge_next(am->m, bound, id, stream, &p, end, errstr, errstr_size);
    if (err != LW_OK || *end)
        return err;
    const am_ent_t *ae = p;
    ae->r->live--;
    *entry = ae->e;
    return LW_OK;
}

void lw_alert_merge_destroy(lw_alert_merge_t *am)
{
    if (!am)
        return;
    while (am->rounds) {
        am_round_t *r = am->rounds;
        am->rounds = r->next;
        round_free(r);
    }
    lw_smerge_destroy(am->m);
    free(am);
}
