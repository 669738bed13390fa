/*
 * sse.c - the dashboard's live feed: alerts as Server-Sent Events, and the
 * numbers behind its charts.
 *
 * One thread per server follows the alert stream with XREAD BLOCK from the
 * last id it saw (never "$", which would lose what arrives between two
 * calls), keeps the newest LW_FEED_RING alerts as ready-made event text,
 * counts alerts per minute by rule for the last hour (a first XRANGE over
 * the hour at start, then every new entry), and every 2 s sums the
 * consumers' events_per_s from their metrics hashes (the registry
 * lw:metrics:consumers, as /metrics reads it: no SCAN).
 *
 * A browser's stream must not hold a worker thread of the pool: every
 * thread serves many connections. So a stream with nothing to send
 * suspends its connection (MHD_suspend_connection, from its content reader)
 * and the feed thread resumes every suspended stream when an alert arrives,
 * and every LW_FEED_KEEPALIVE_S so that an idle stream still writes (a
 * comment line) and a vanished browser is noticed.
 *
 * On a Redis Cluster the alerts are on one stream per hash slot,
 * lw:alerts:{TAG} (consumers/README.md, "On a Redis Cluster"), and XREAD
 * cannot span slots. There the thread follows them as loanwire-alerts
 * --source redis does: the merge of loanwire/streams.h (one XRANGE per slot,
 * pipelined per master, entries in (id, slot) order) polled every
 * LW_FEED_BLOCK_MS, showing only entries below the masters' smallest clock
 * (lw_alert_streams_clock), so an entry recorded later by a slower master is
 * never shown after a newer one, nor lost. The event ids are then
 * "<ms>-<seq>:<slot>", as /v1/alerts's stream_id; the consumers' rate comes
 * from their metrics hashes, each routed to its slot.
 */
#include "dash_int.h"

#include "loanwire/redis.h"

#include "loanwire/log.h"
#include "loanwire/rcluster.h"
#include "loanwire/state.h"
#include "loanwire/streams.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define LW_FEED_RING        1024 /* alerts kept for streams that fall behind */
#define LW_FEED_RULES       32   /* distinct rules charted; more are "other" */
#define LW_FEED_MINUTES     60
#define LW_FEED_RATE_N      1800 /* one sample every 2 s: an hour */
#define LW_FEED_RATE_EVERY  2000000
#define LW_FEED_KEEPALIVE_S 10
#define LW_FEED_BLOCK_MS    500 /* XREAD BLOCK: also how soon a stop is seen */
#define LW_FEED_SCAN_MAX    200000

typedef struct lw_stream {
    struct lw_stream *next; /* in f->suspended while suspended */
    lw_feed_t *f;
    struct MHD_Connection *conn;
    uint64_t next_seq; /* the next ring entry to send */
    bool hello;        /* the retry: line is out */
    bool suspended;
    int64_t last_write_us;
} lw_stream_t;

struct lw_feed_s {
    lw_redis_url_t url;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;  /* stop */
    bool stopping;
    char *ring[LW_FEED_RING]; /* "id: ..\nevent: alert\ndata: {..}\n\n" */
    uint64_t seq;             /* entries ever pushed; ring[i % LW_FEED_RING] */
    lw_stream_t *suspended;
    int64_t minute_no[LW_FEED_MINUTES]; /* the minute (ms / 60000) a slot counts */
    char rules[LW_FEED_RULES][LW_ID_MAX + 1];
    int n_rules;
    uint32_t counts[LW_FEED_RULES][LW_FEED_MINUTES];
    int64_t rate_t[LW_FEED_RATE_N]; /* wall-clock ms */
    int64_t rate_v[LW_FEED_RATE_N];
    size_t rate_n; /* samples ever taken */
};

static int64_t lw_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Counting (under f->mu) ---------------------------------------------- */

static void lw_feed_count(lw_feed_t *f, int64_t ms, const char *rule)
{
    int64_t minute = ms / 60000, now_minute = lw_wall_ms() / 60000;
    size_t slot = (size_t)(minute % LW_FEED_MINUTES);
    int r;

    if (minute <= now_minute - LW_FEED_MINUTES || minute > now_minute + 1)
        return; /* older than the chart, or a clock far off */
    for (r = 0; r < f->n_rules; r++)
        if (strcmp(f->rules[r], rule) == 0)
            break;
    if (r == f->n_rules) {
        if (f->n_rules == LW_FEED_RULES)
            r = LW_FEED_RULES - 1; /* the last charted rule takes the rest */
        else
            snprintf(f->rules[f->n_rules++], sizeof f->rules[0], "%s", rule);
    }
    if (f->minute_no[slot] != minute) {
        f->minute_no[slot] = minute;
        for (int i = 0; i < LW_FEED_RULES; i++)
            f->counts[i][slot] = 0;
    }
    f->counts[r][slot]++;
}

static const char *lw_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(k->str, name) == 0)
            return v->str;
    }
    return NULL;
}

/* One stream entry into the ring and the counts, then wakes the streams.
 * The alert JSON is parsed and dumped again, with its stream_id added: the
 * event's data line must be one line, and Redis is not ours to trust. */
static void lw_feed_push(lw_feed_t *f, const redisReply *e, int slot)
{
    const char *id, *js, *rule;
    json_t *al;
    char *data, *text, sid[96];
    size_t len;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return;
    id = e->element[0]->str;
    if (slot >= 0) { /* a cluster: ids of two slots may tie, the slot names it */
        snprintf(sid, sizeof sid, "%s:%d", e->element[0]->str, slot);
        id = sid;
    }
    js = lw_field(e->element[1], "json");
    rule = lw_field(e->element[1], "rule_id");
    if (!js || !(al = json_loads(js, 0, NULL)) || !json_is_object(al)) {
        lw_warn("dashboard: %s entry %s has no valid json field", LW_REDIS_ALERT_STREAM, id);
        return;
    }
    json_object_set_new(al, "stream_id", json_string(id));
    data = json_dumps(al, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(al);
    if (!data)
        return;
    len = strlen(id) + strlen(data) + 32;
    text = malloc(len);
    if (text)
        snprintf(text, len, "id: %s\nevent: alert\ndata: %s\n\n", id, data);
    free(data);
    pthread_mutex_lock(&f->mu);
    lw_feed_count(f, strtoll(id, NULL, 10), rule ? rule : "?");
    if (text) {
        free(f->ring[f->seq % LW_FEED_RING]);
        f->ring[f->seq % LW_FEED_RING] = text;
        f->seq++;
    }
    pthread_mutex_unlock(&f->mu);
}

/* Resumes every suspended stream (under f->mu). */
static void lw_feed_wake(lw_feed_t *f)
{
    while (f->suspended) {
        lw_stream_t *s = f->suspended;
        f->suspended = s->next;
        s->next = NULL;
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

/* ---- The thread ---------------------------------------------------------- */

/* Counts the last hour of the stream (the chart's history at start) and
 * returns the id to follow from. */
static bool lw_feed_backfill(lw_feed_t *f, redisContext *rc, char *last, size_t last_size)
{
    char cursor[72];
    size_t scanned = 0;
    redisReply *r = redisCommand(rc, "XREVRANGE %s + - COUNT 1", LW_REDIS_ALERT_STREAM);

    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return false;
    }
    snprintf(last, last_size, "0-0");
    if (r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 2 && r->element[0]->element[0]->type == REDIS_REPLY_STRING)
        snprintf(last, last_size, "%s", r->element[0]->element[0]->str);
    freeReplyObject(r);
    snprintf(cursor, sizeof cursor, "%" PRId64, lw_wall_ms() - (int64_t)LW_FEED_MINUTES * 60000);
    while (scanned < LW_FEED_SCAN_MAX) {
        r = redisCommand(rc, "XRANGE %s %s %s COUNT 1000", LW_REDIS_ALERT_STREAM, cursor, last);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            if (r)
                freeReplyObject(r);
            return false;
        }
        pthread_mutex_lock(&f->mu);
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            const char *rule;
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            rule = lw_field(e->element[1], "rule_id");
            lw_feed_count(f, strtoll(e->element[0]->str, NULL, 10), rule ? rule : "?");
            snprintf(cursor, sizeof cursor, "(%s", e->element[0]->str);
        }
        pthread_mutex_unlock(&f->mu);
        scanned += r->elements;
        if (r->elements < 1000) {
            freeReplyObject(r);
            break;
        }
        freeReplyObject(r);
    }
    return true;
}

/* New alerts after *last (cluster hook: see the file's top). */
static bool lw_feed_poll(lw_feed_t *f, redisContext *rc, char *last, size_t last_size)
{
    redisReply *r = redisCommand(rc, "XREAD COUNT 256 BLOCK %d STREAMS %s %s", LW_FEED_BLOCK_MS,
                                 LW_REDIS_ALERT_STREAM, last);
    bool any = false;

    if (!r || (r->type != REDIS_REPLY_ARRAY && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        return false;
    }
    /* [[stream, [[id, fields], ...]]] or nil after the block */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
        const redisReply *es = r->element[0]->element[1];
        for (size_t i = 0; es->type == REDIS_REPLY_ARRAY && i < es->elements; i++) {
            const redisReply *e = es->element[i];
            lw_feed_push(f, e, -1);
            if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
                e->element[0]->type == REDIS_REPLY_STRING) {
                snprintf(last, last_size, "%s", e->element[0]->str);
                any = true;
            }
        }
    }
    freeReplyObject(r);
    if (any) {
        pthread_mutex_lock(&f->mu);
        lw_feed_wake(f);
        pthread_mutex_unlock(&f->mu);
    }
    return true;
}

/* Sums events_per_s over the registered consumers (one SMEMBERS, then the
 * HGETs pipelined). A consumer whose hash expired counts 0. */
static bool lw_feed_sample(lw_feed_t *f, redisContext *rc)
{
    redisReply *m = redisCommand(rc, "SMEMBERS lw:metrics:consumers");
    int64_t sum = 0;
    bool ok = true;

    if (!m || m->type != REDIS_REPLY_ARRAY) {
        if (m)
            freeReplyObject(m);
        return false;
    }
    for (size_t i = 0; i < m->elements; i++)
        if (m->element[i]->type == REDIS_REPLY_STRING)
            redisAppendCommand(rc, "HGET lw:metrics:%s events_per_s", m->element[i]->str);
    for (size_t i = 0; i < m->elements; i++) {
        redisReply *v = NULL;
        if (m->element[i]->type != REDIS_REPLY_STRING)
            continue;
        if (redisGetReply(rc, (void **)&v) != REDIS_OK) {
            ok = false;
            break;
        }
        if (v->type == REDIS_REPLY_STRING) {
            long long n = strtoll(v->str, NULL, 10);
            if (n > 0)
                sum += n;
        }
        freeReplyObject(v);
    }
    freeReplyObject(m);
    if (!ok)
        return false;
    pthread_mutex_lock(&f->mu);
    f->rate_t[f->rate_n % LW_FEED_RATE_N] = lw_wall_ms();
    f->rate_v[f->rate_n % LW_FEED_RATE_N] = sum;
    f->rate_n++;
    pthread_mutex_unlock(&f->mu);
    return true;
}

/* ---- On a Redis Cluster: the per-slot streams, merged ---------------------- */

#define LW_FEED_PAGE 256

/* A merge of every slot's stream from (mode, from), oldest first. */
static lw_alert_merge_t *lw_feed_merge(lw_rcluster_t *cl, lw_sfrom_t mode, uint64_t from_ms)
{
    lw_alert_merge_t *am = lw_alert_merge_new(cl, false);
    if (!am)
        return NULL;
    lw_smerge_t *m = lw_alert_merge_engine(am);
    lw_smerge_start(m, mode, (lw_sid_t){from_ms, 0});
    lw_smerge_first_page(m, LW_FEED_PAGE);
    lw_smerge_hint(m, LW_FEED_PAGE);
    return am;
}

/* Every entry below the masters' clock: counted (backfill) or pushed. */
static bool lw_feed_drain(lw_feed_t *f, lw_rcluster_t *cl, lw_alert_merge_t *am, bool backfill,
                          size_t *taken)
{
    char errstr[256];
    uint64_t now;
    bool end = false, any = false;
    if (lw_alert_streams_clock(cl, &now, errstr, sizeof errstr) != LW_OK) {
        lw_debug("dashboard feed: %s", errstr);
        return false;
    }
    lw_sid_t bound = {now, 0};
    lw_smerge_rearm(lw_alert_merge_engine(am));
    while (!end && (!backfill || *taken < LW_FEED_SCAN_MAX)) {
        lw_sid_t id;
        size_t stream;
        const redisReply *e;
        if (lw_alert_merge_next(am, &bound, &id, &stream, &e, &end, errstr, sizeof errstr) !=
            LW_OK) {
            lw_debug("dashboard feed: %s", errstr);
            return false;
        }
        if (end)
            break;
        (*taken)++;
        if (backfill) {
            const char *rule = lw_field(e->element[1], "rule_id");
            pthread_mutex_lock(&f->mu);
            lw_feed_count(f, (int64_t)id.ms, rule ? rule : "?");
            pthread_mutex_unlock(&f->mu);
        } else {
            lw_feed_push(f, e, lw_alert_stream_slot(cl, stream));
            any = true;
        }
    }
    if (any) {
        pthread_mutex_lock(&f->mu);
        lw_feed_wake(f);
        pthread_mutex_unlock(&f->mu);
    }
    return true;
}

/* The last hour counted, then a merge that follows from the masters' clock. */
static lw_alert_merge_t *lw_feed_backfill_cluster(lw_feed_t *f, lw_rcluster_t *cl)
{
    char errstr[256];
    uint64_t now;
    size_t taken = 0;
    if (lw_alert_streams_clock(cl, &now, errstr, sizeof errstr) != LW_OK)
        return NULL;
    uint64_t hour = (uint64_t)LW_FEED_MINUTES * 60000;
    lw_alert_merge_t *am = lw_feed_merge(cl, LW_SFROM_INCL, now > hour ? now - hour : 0);
    if (!am || !lw_feed_drain(f, cl, am, true, &taken)) {
        lw_alert_merge_destroy(am);
        return NULL;
    }
    if (taken >= LW_FEED_SCAN_MAX) { /* a flood: follow from now rather than read it all */
        lw_alert_merge_destroy(am);
        if (lw_alert_streams_clock(cl, &now, errstr, sizeof errstr) != LW_OK)
            return NULL;
        am = lw_feed_merge(cl, LW_SFROM_INCL, now);
    }
    return am;
}

/* lw_feed_sample on a cluster: the registry, then each hash on its slot. */
static bool lw_feed_sample_cluster(lw_feed_t *f, lw_rcluster_t *cl)
{
    static const char reg[] = "lw:metrics:consumers";
    char errstr[256];
    redisReply *m = NULL;
    int64_t sum = 0;
    bool ok = true;
    if (lw_rcluster_command(cl, lw_rcluster_keyslot(reg, sizeof reg - 1), &m, errstr, sizeof errstr,
                            "SMEMBERS %s", reg) != LW_RCLUSTER_OK ||
        m->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(m);
        return false;
    }
    lw_rcluster_batch_t *b = lw_rcluster_batch_new(cl);
    size_t groups = 0;
    for (size_t i = 0; b && ok && i < m->elements; i++) {
        char key[LW_ID_MAX + 32];
        if (m->element[i]->type != REDIS_REPLY_STRING)
            continue;
        int n = snprintf(key, sizeof key, "lw:metrics:%s", m->element[i]->str);
        if (n < 0 || (size_t)n >= sizeof key)
            continue;
        ok = lw_rcluster_batch_group(b, lw_rcluster_keyslot(key, (size_t)n)) >= 0 &&
             lw_rcluster_batch_appendf(b, "HGET %s events_per_s", key) == LW_RCLUSTER_OK;
        groups++;
    }
    ok = ok && b &&
         (groups == 0 || (lw_rcluster_batch_send(b, errstr, sizeof errstr) == LW_RCLUSTER_OK &&
                          lw_rcluster_batch_recv(b, errstr, sizeof errstr) == LW_RCLUSTER_OK));
    for (size_t g = 0; ok && g < groups; g++) {
        const redisReply *v = lw_rcluster_group_reply(b, g, 0);
        if (v && v->type == REDIS_REPLY_STRING) {
            long long n = strtoll(v->str, NULL, 10);
            if (n > 0)
                sum += n;
        }
    }
    lw_rcluster_batch_destroy(b);
    freeReplyObject(m);
    if (!ok)
        return false;
    pthread_mutex_lock(&f->mu);
    f->rate_t[f->rate_n % LW_FEED_RATE_N] = lw_wall_ms();
    f->rate_v[f->rate_n % LW_FEED_RATE_N] = sum;
    f->rate_n++;
    pthread_mutex_unlock(&f->mu);
    return true;
}

/* Waits ms on the feed's condition (a stop cuts it short). */
static void lw_feed_pause(lw_feed_t *f, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&f->mu);
    if (!f->stopping)
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    pthread_mutex_unlock(&f->mu);
}

/* The thread's loop on a cluster; returns when stopping, or false when the
 * cluster failed (the caller reconnects after a pause). */
static bool lw_feed_run_cluster(lw_feed_t *f, lw_rcluster_t *cl, int64_t *next_keepalive)
{
    lw_alert_merge_t *am = lw_feed_backfill_cluster(f, cl);
    int64_t next_sample = 0;
    bool ok = am != NULL;
    while (ok) {
        int64_t now = lw_mono_us();
        size_t taken = 0;
        pthread_mutex_lock(&f->mu);
        bool stop = f->stopping;
        if (!stop && now >= *next_keepalive) {
            lw_feed_wake(f);
            *next_keepalive = now + LW_FEED_KEEPALIVE_S * 1000000LL;
        }
        pthread_mutex_unlock(&f->mu);
        if (stop)
            break;
        if (now >= next_sample) {
            ok = lw_feed_sample_cluster(f, cl);
            next_sample = now + LW_FEED_RATE_EVERY;
        }
        if (ok)
            ok = lw_feed_drain(f, cl, am, false, &taken);
        if (ok)
            lw_feed_pause(f, LW_FEED_BLOCK_MS);
    }
    /* A failed merge starts again from the masters' clock: its position is
     * not kept, so alerts recorded while the cluster was away are in
     * /v1/alerts, not replayed into the live feed. */
    lw_alert_merge_destroy(am);
    return ok;
}

static void *lw_feed_main(void *arg)
{
    lw_feed_t *f = arg;
    redisContext *rc = NULL;
    char last[64] = "", errstr[256];
    int64_t next_sample = 0, next_keepalive = lw_mono_us() + LW_FEED_KEEPALIVE_S * 1000000LL;
    bool warned = false;

    for (;;) {
        int64_t now = lw_mono_us();
        bool ok = true;

        pthread_mutex_lock(&f->mu);
        if (f->stopping) {
            pthread_mutex_unlock(&f->mu);
            break;
        }
        if (now >= next_keepalive) {
            lw_feed_wake(f);
            next_keepalive = now + LW_FEED_KEEPALIVE_S * 1000000LL;
        }
        pthread_mutex_unlock(&f->mu);
        if (!rc) {
            /* a cluster (detected as every reader does) is followed by its
             * own loop; a single Redis by XREAD BLOCK below */
            lw_rcluster_t *cl = NULL;
            if (lw_rcluster_new(&f->url, NULL, &cl, errstr, sizeof errstr) == LW_RCLUSTER_OK &&
                lw_rcluster_is_cluster(cl)) {
                if (!lw_feed_run_cluster(f, cl, &next_keepalive)) {
                    if (!warned)
                        lw_warn("dashboard feed: redis cluster failed (retrying every second)");
                    warned = true;
                    lw_feed_pause(f, 1000);
                }
                lw_rcluster_destroy(cl);
                continue;
            }
            lw_rcluster_destroy(cl);
        }
        if (!rc && !(rc = lw_redis_connect(&f->url, 5000, NULL, errstr, sizeof errstr))) {
            struct timespec ts;
            if (!warned)
                lw_warn("dashboard feed: redis: %s (retrying every second)", errstr);
            warned = true;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            pthread_mutex_lock(&f->mu);
            if (!f->stopping)
                pthread_cond_timedwait(&f->cv, &f->mu, &ts);
            pthread_mutex_unlock(&f->mu);
            continue;
        }
        if (!last[0])
            ok = lw_feed_backfill(f, rc, last, sizeof last);
        if (ok && now >= next_sample) {
            ok = lw_feed_sample(f, rc);
            next_sample = now + LW_FEED_RATE_EVERY;
        }
        if (ok)
            ok = lw_feed_poll(f, rc, last, sizeof last);
        if (!ok) {
            struct timespec ts;
            if (!warned)
                lw_warn("dashboard feed: redis: %s (retrying every second)",
                        rc->err ? rc->errstr : "unexpected reply");
            warned = true;
            redisFree(rc); /* reconnect; last is kept, so nothing is skipped */
            rc = NULL;
            /* A Redis that answers with errors (a cluster node's MOVED, a
             * wrong type) would otherwise be asked again at once, for ever. */
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            pthread_mutex_lock(&f->mu);
            if (!f->stopping)
                pthread_cond_timedwait(&f->cv, &f->mu, &ts);
            pthread_mutex_unlock(&f->mu);
        } else {
            warned = false;
        }
    }
    redisFree(rc);
    return NULL;
}

lw_feed_t *lw_feed_start(const lw_redis_url_t *url, char *errstr, size_t errstr_size)
{
    lw_feed_t *f = calloc(1, sizeof *f);
    pthread_condattr_t ca;

    if (!f) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    f->url = *url;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&f->thread, NULL, lw_feed_main, f) != 0) {
        snprintf(errstr, errstr_size, "cannot start the dashboard's alert feed thread");
        lw_feed_free(f);
        return NULL;
    }
    f->started = true;
    return f;
}

void lw_feed_shutdown(lw_feed_t *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stopping = true;
    lw_feed_wake(f); /* their readers now end the streams */
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    if (f->started)
        pthread_join(f->thread, NULL);
    f->started = false;
}

void lw_feed_free(lw_feed_t *f)
{
    if (!f)
        return;
    lw_feed_shutdown(f);
    for (size_t i = 0; i < LW_FEED_RING; i++)
        free(f->ring[i]);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* ---- One browser's stream ------------------------------------------------ */

static ssize_t lw_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    lw_stream_t *s = cls;
    lw_feed_t *f = s->f;
    size_t n = 0;

    (void)pos;
    pthread_mutex_lock(&f->mu);
    if (f->stopping) {
        pthread_mutex_unlock(&f->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (!s->hello) {
        /* The browser reconnects 2 s after a lost stream. */
        static const char hello[] = "retry: 2000\n: loanwire alerts\n\n";
        if (max < sizeof hello) {
            pthread_mutex_unlock(&f->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        memcpy(buf, hello, sizeof hello - 1);
        n = sizeof hello - 1;
        s->hello = true;
    }
    /* A stream that fell more than the ring behind skips to the oldest kept
     * (the page reloads the list from /v1/alerts when it reconnects). */
    if (f->seq - s->next_seq > LW_FEED_RING)
        s->next_seq = f->seq - LW_FEED_RING;
    while (s->next_seq < f->seq) {
        const char *t = f->ring[s->next_seq % LW_FEED_RING];
        size_t len = strlen(t);
        if (len > max - n) {
            if (n == 0 && len > max)
                s->next_seq++; /* can never fit: skip it rather than stall */
            break;
        }
        memcpy(buf + n, t, len);
        n += len;
        s->next_seq++;
    }
    if (n == 0 && lw_mono_us() - s->last_write_us >= LW_FEED_KEEPALIVE_S * 1000000LL && max >= 4) {
        memcpy(buf, ":\n\n", 3); /* a comment: keeps proxies and the idle timeout away */
        n = 3;
    }
    if (n == 0) {
        /* Nothing to say: give the worker thread back until the feed wakes us. */
        s->suspended = true;
        s->next = f->suspended;
        f->suspended = s;
        MHD_suspend_connection(s->conn);
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    s->last_write_us = lw_mono_us();
    pthread_mutex_unlock(&f->mu);
    return (ssize_t)n;
}

static void lw_stream_free(void *cls)
{
    lw_stream_t *s = cls;
    lw_feed_t *f = s->f;

    pthread_mutex_lock(&f->mu);
    if (s->suspended) { /* cannot happen (MHD frees only resumed ones): be safe */
        for (lw_stream_t **p = &f->suspended; *p; p = &(*p)->next) {
            if (*p == s) {
                *p = s->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&f->mu);
    free(s);
}

struct MHD_Response *lw_feed_response(lw_feed_t *f, struct MHD_Connection *conn)
{
    lw_stream_t *s = calloc(1, sizeof *s);
    struct MHD_Response *resp;

    if (!s)
        return NULL;
    s->f = f;
    s->conn = conn;
    s->last_write_us = lw_mono_us();
    pthread_mutex_lock(&f->mu);
    s->next_seq = f->seq; /* from now: the page loads the backlog from /v1/alerts */
    pthread_mutex_unlock(&f->mu);
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, lw_stream_read, s,
                                             lw_stream_free);
    if (!resp) {
        free(s);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return resp;
}

/* ---- Chart data ---------------------------------------------------------- */

char *lw_feed_stats_json(lw_feed_t *f)
{
    int64_t now = lw_wall_ms(), first_minute = now / 60000 - (LW_FEED_MINUTES - 1);
    json_t *doc = json_object(), *minutes = json_array(), *rules = json_object();
    json_t *rt = json_array(), *rv = json_array();
    size_t n, start;
    char *out;

    if (!doc || !minutes || !rules || !rt || !rv)
        goto fail;
    pthread_mutex_lock(&f->mu);
    for (int64_t m = 0; m < LW_FEED_MINUTES; m++)
        json_array_append_new(minutes, json_integer((first_minute + m) * 60000));
    for (int r = 0; r < f->n_rules; r++) {
        json_t *c = json_array();
        for (int64_t m = 0; m < LW_FEED_MINUTES; m++) {
            int64_t minute = first_minute + m;
            size_t slot = (size_t)(minute % LW_FEED_MINUTES);
            json_array_append_new(
                c, json_integer(f->minute_no[slot] == minute ? f->counts[r][slot] : 0));
        }
        json_object_set_new(rules, f->rules[r], c);
    }
    n = f->rate_n < LW_FEED_RATE_N ? f->rate_n : LW_FEED_RATE_N;
    start = f->rate_n - n;
    for (size_t i = start; i < f->rate_n; i++) {
        if (f->rate_t[i % LW_FEED_RATE_N] < now - LW_FEED_MINUTES * 60000LL)
            continue;
        json_array_append_new(rt, json_integer(f->rate_t[i % LW_FEED_RATE_N]));
        json_array_append_new(rv, json_integer(f->rate_v[i % LW_FEED_RATE_N]));
    }
    pthread_mutex_unlock(&f->mu);
    json_object_set_new(doc, "now_ms", json_integer(now));
    json_object_set_new(doc, "minute_ms", minutes);
    json_object_set_new(doc, "alerts_per_minute", rules);
    json_object_set_new(doc, "rate_ms", rt);
    json_object_set_new(doc, "events_per_s", rv);
    out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return out;
fail:
    json_decref(doc);
    json_decref(minutes);
    json_decref(rules);
    json_decref(rt);
    json_decref(rv);
    return NULL;
}
