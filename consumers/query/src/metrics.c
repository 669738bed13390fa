/*
 * metrics.c - /metrics: the consumers' counters from Redis, summed, plus the
 * query service's own request counts, in Prometheus text format 0.0.4.
 *
 * Each loanwire-exposure instance keeps a hash lw:metrics:<consumer-id>
 * (consumers/README.md names the fields) and adds its id to the set
 * lw:metrics:consumers, which is all this reads: no SCAN. Counters are summed over every
 * consumer; a partition's lag is taken as the largest any consumer reports
 * (a stale hash left by a former owner can only overstate it); the Redis
 * round trip is per consumer. Counts print as integers.
 */
#include "loanwire/query.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LW_METRICS_PREFIX   "lw:metrics:"
#define LW_METRICS_REGISTRY "lw:metrics:consumers" /* the consumers SADD their id here */

typedef struct lw_kv {
    char *a, *b; /* rule, or topic+partition, or consumer */
    long long v;
} lw_kv_t;

typedef struct lw_kvs {
    lw_kv_t *v;
    size_t n, cap;
} lw_kvs_t;

/* Counters summed over consumers: the field in lw:metrics:<id>, its name here. */
static const struct {
    const char *field, *name, *help;
} lw_sums[] = {
    {"events_consumed", "loanwire_events_consumed_total",
     "Loan events taken from Kafka by their partition's owner, summed over consumers."},
    {"events_applied", "loanwire_events_applied_total",
     "Loan events that changed a borrower's state in Redis, summed over consumers."},
    {"duplicates", "loanwire_duplicates_total",
     "Events that changed nothing: a sequence already applied, or no effect (e.g. an "
     "application already out of the window)."},
    {"out_of_order", "loanwire_out_of_order_total",
     "Events ignored because a newer sequence was already applied."},
    {"fenced", "loanwire_fenced_total",
     "Writes refused because the writer lost ownership (zombie fencing)."},
    {"dead_letters", "loanwire_dead_letters_total",
     "Events sent to the dead-letter topic, summed over consumers."},
    {"produce_failed", "loanwire_produce_failed_total",
     "Alerts or dead letters the broker finally refused (the consumer stops on one)."},
};
#define LW_NSUMS (sizeof lw_sums / sizeof *lw_sums)

struct lw_metrics_agg_s {
    long long sums[LW_NSUMS];
    size_t consumers;
    char *last_consumer;
    lw_kvs_t alerts; /* a = rule */
    lw_kvs_t lag;    /* a = topic, b = partition */
    lw_kvs_t rtt;    /* a = consumer */
    lw_kvs_t fenced; /* a = consumer: partitions whose writes are refused */
    lw_kvs_t stall;  /* a = consumer: seconds lag has stood while nothing was consumed */
};

lw_metrics_agg_t *lw_metrics_agg_new(void)
{
    return calloc(1, sizeof(lw_metrics_agg_t));
}

static void lw_kvs_free(lw_kvs_t *k)
{
    for (size_t i = 0; i < k->n; i++) {
        free(k->v[i].a);
        free(k->v[i].b);
    }
    free(k->v);
}

void lw_metrics_agg_destroy(lw_metrics_agg_t *agg)
{
    if (!agg)
        return;
    lw_kvs_free(&agg->alerts);
    lw_kvs_free(&agg->lag);
    lw_kvs_free(&agg->rtt);
    lw_kvs_free(&agg->fenced);
    lw_kvs_free(&agg->stall);
    free(agg->last_consumer);
    free(agg);
}

/* The entry for (a, b), created at 0 when new; NULL when out of memory. */
static lw_kv_t *lw_kvs_get(lw_kvs_t *k, const char *a, const char *b)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i].a, a) == 0 && strcmp(k->v[i].b ? k->v[i].b : "", b ? b : "") == 0)
            return &k->v[i];
    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 8;
        lw_kv_t *nv = realloc(k->v, nc * sizeof *nv);
        if (!nv)
            return NULL;
        k->v = nv;
        k->cap = nc;
    }
    k->v[k->n].a = strdup(a);
    k->v[k->n].b = b ? strdup(b) : NULL;
    k->v[k->n].v = 0;
    if (!k->v[k->n].a || (b && !k->v[k->n].b)) {
        free(k->v[k->n].a);
        free(k->v[k->n].b);
        return NULL;
    }
    return &k->v[k->n++];
}

static bool lw_parse_ll(const char *s, long long *out)
{
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return s[0] && !*end && errno == 0;
}

void lw_metrics_agg_add(lw_metrics_agg_t *agg, const char *consumer, const char *field,
                        const char *value)
{
    long long v;
    lw_kv_t *kv;

    if (!agg || !consumer || !field || !value || !lw_parse_ll(value, &v))
        return;
    if (!agg->last_consumer || strcmp(agg->last_consumer, consumer) != 0) {
        free(agg->last_consumer);
        agg->last_consumer = strdup(consumer);
        agg->consumers++;
    }
    for (size_t i = 0; i < LW_NSUMS; i++) {
        if (strcmp(field, lw_sums[i].field) == 0) {
            agg->sums[i] += v;
            return;
        }
    }
    if (strncmp(field, "alerts:", 7) == 0 && field[7]) {
        if ((kv = lw_kvs_get(&agg->alerts, field + 7, NULL)))
            kv->v += v;
    } else if (strncmp(field, "lag:", 4) == 0) {
        /* lag:<topic>:<partition>; Kafka topic names cannot hold ':'. */
        const char *colon = strrchr(field + 4, ':');
        char topic[256];
        size_t tl;
        if (!colon || colon == field + 4 || !colon[1])
            return;
        tl = (size_t)(colon - (field + 4));
        if (tl >= sizeof topic)
            return;
        memcpy(topic, field + 4, tl);
        topic[tl] = '\0';
        if ((kv = lw_kvs_get(&agg->lag, topic, colon + 1)) && v > kv->v)
            kv->v = v;
    } else if (strcmp(field, "redis_rtt_us") == 0) {
        if ((kv = lw_kvs_get(&agg->rtt, consumer, NULL)))
            kv->v = v;
    } else if (strcmp(field, "partitions_fenced") == 0) {
        if ((kv = lw_kvs_get(&agg->fenced, consumer, NULL)))
            kv->v = v;
    } else if (strcmp(field, "stalled_s") == 0) {
        if ((kv = lw_kvs_get(&agg->stall, consumer, NULL)))
            kv->v = v;
    }
}

/* A growing text buffer; on allocation failure it stays failed. */
typedef struct lw_buf {
    char *p;
    size_t len, cap;
    bool failed;
} lw_buf_t;

static void lw_bprintf(lw_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lw_bprintf(lw_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->len + (size_t)n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

/* Label value escaped as the exposition format asks (\\, \", \n). */
static void lw_blabel(lw_buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            lw_bprintf(b, "\\\\");
        else if (*s == '"')
            lw_bprintf(b, "\\\"");
        else if (*s == '\n')
            lw_bprintf(b, "\\n");
        else
            lw_bprintf(b, "%c", *s);
    }
}

static void lw_bhead(lw_buf_t *b, const char *name, const char *type, const char *help)
{
    lw_bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *lw_metrics_agg_render(const lw_metrics_agg_t *agg, const lw_query_counts_t *counts)
{
    lw_buf_t b = {0};

    lw_bhead(&b, "loanwire_consumers", "gauge",
             "Consumers with a metrics hash in Redis (lw:metrics:*).");
    lw_bprintf(&b, "loanwire_consumers %zu\n", agg->consumers);
    for (size_t i = 0; i < LW_NSUMS; i++) {
        lw_bhead(&b, lw_sums[i].name, "counter", lw_sums[i].help);
        lw_bprintf(&b, "%s %lld\n", lw_sums[i].name, agg->sums[i]);
    }
    lw_bhead(&b, "loanwire_alerts_total", "counter", "Alerts raised, by rule.");
    for (size_t i = 0; i < agg->alerts.n; i++) {
        lw_bprintf(&b, "loanwire_alerts_total{rule=\"");
        lw_blabel(&b, agg->alerts.v[i].a);
        lw_bprintf(&b, "\"} %lld\n", agg->alerts.v[i].v);
    }
    lw_bhead(&b, "loanwire_consumer_lag", "gauge",
             "Messages behind the partition's high watermark (largest reported).");
    for (size_t i = 0; i < agg->lag.n; i++) {
        lw_bprintf(&b, "loanwire_consumer_lag{topic=\"");
        lw_blabel(&b, agg->lag.v[i].a);
        lw_bprintf(&b, "\",partition=\"");
        lw_blabel(&b, agg->lag.v[i].b);
        lw_bprintf(&b, "\"} %lld\n", agg->lag.v[i].v);
    }
    lw_bhead(&b, "loanwire_redis_rtt_seconds", "gauge",
             "Redis round trip last measured by each consumer.");
    for (size_t i = 0; i < agg->rtt.n; i++) {
        long long us = agg->rtt.v[i].v < 0 ? 0 : agg->rtt.v[i].v;
        lw_bprintf(&b, "loanwire_redis_rtt_seconds{consumer=\"");
        lw_blabel(&b, agg->rtt.v[i].a);
        lw_bprintf(&b, "\"} %lld.%06lld\n", us / 1000000, us % 1000000);
    }
    /* a consumer holding fenced partitions, or lag standing while nothing is
     * consumed, is stuck: alert on either above 0 */
    lw_bhead(&b, "loanwire_partitions_fenced", "gauge",
             "Assigned partitions whose writes are being refused, by consumer (it stops with an "
             "error after --stall-timeout).");
    for (size_t i = 0; i < agg->fenced.n; i++) {
        lw_bprintf(&b, "loanwire_partitions_fenced{consumer=\"");
        lw_blabel(&b, agg->fenced.v[i].a);
        lw_bprintf(&b, "\"} %lld\n", agg->fenced.v[i].v);
    }
    lw_bhead(&b, "loanwire_consumer_stalled_seconds", "gauge",
             "How long a consumer's lag has stood above 0 while it consumed nothing (0: moving).");
    for (size_t i = 0; i < agg->stall.n; i++) {
        lw_bprintf(&b, "loanwire_consumer_stalled_seconds{consumer=\"");
        lw_blabel(&b, agg->stall.v[i].a);
        lw_bprintf(&b, "\"} %lld\n", agg->stall.v[i].v);
    }
    lw_bhead(&b, "loanwire_query_requests_total", "counter",
             "HTTP requests answered by this loanwire-query, by status code.");
    for (int i = 0; counts && i < LW_QUERY_STATUS_SLOTS; i++) {
        if (lw_query_status_codes[i])
            lw_bprintf(&b, "loanwire_query_requests_total{code=\"%d\"} %llu\n",
                       lw_query_status_codes[i], (unsigned long long)counts->by_status[i]);
        else
            lw_bprintf(&b, "loanwire_query_requests_total{code=\"other\"} %llu\n",
                       (unsigned long long)counts->by_status[i]);
    }
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* Error text of a failed command: lw_rcluster's, or the reply's. */
static const char *lw_reply_err(lw_rcluster_err_t ce, const char *why, const redisReply *r)
{
    return ce != LW_RCLUSTER_OK           ? why
           : !r                           ? "no reply"
           : r->type == REDIS_REPLY_ERROR ? r->str
                                          : "unexpected reply";
}

static int lw_key_slot(const char *key)
{
    return lw_rcluster_keyslot(key, strlen(key));
}

lw_err_t lw_query_metrics_text(lw_rcluster_t *cl, const lw_query_counts_t *counts, char **text,
                               char *errstr, size_t errstr_size)
{
    lw_metrics_agg_t *agg = lw_metrics_agg_new();
    redisReply *ids = NULL;
    lw_rcluster_batch_t *bat = NULL;
    lw_err_t err = LW_OK;
    lw_rcluster_err_t ce;
    const redisReply **asked = NULL, **stale = NULL;
    size_t n = 0, n_stale = 0;
    char why[256] = "";

    *text = NULL;
    if (!agg) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    /* The registry every consumer SADDs its id to, not a walk of the
     * keyspace: a SCAN of lw:metrics:* cost ~10,000 calls per request at a
     * million keys and let anyone without a token load Redis. The cost is
     * now one SMEMBERS plus one HGETALL per registered consumer, each routed
     * to its key's slot and all sent at once (one lw_rcluster batch: one
     * pipeline per master that holds some, every master at the same time). */
    ce = lw_rcluster_command(cl, lw_key_slot(LW_METRICS_REGISTRY), &ids, why, sizeof why,
                             "SMEMBERS %s", LW_METRICS_REGISTRY);
    if (ce != LW_RCLUSTER_OK || ids->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errstr_size, "redis SMEMBERS %s: %s", LW_METRICS_REGISTRY,
                 lw_reply_err(ce, why, ids));
        err = LW_ERR_REDIS;
        goto out;
    }
    stale = calloc(ids->elements ? ids->elements : 1, sizeof *stale);
    asked = calloc(ids->elements ? ids->elements : 1, sizeof *asked);
    bat = lw_rcluster_batch_new(cl);
    if (!stale || !asked || !bat) {
        snprintf(errstr, errstr_size, "out of memory");
        err = LW_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < ids->elements; i++) {
        const redisReply *id = ids->element[i];
        char key[512];
        int kl;
        if (id->type != REDIS_REPLY_STRING)
            continue;
        kl = snprintf(key, sizeof key, "%s%s", LW_METRICS_PREFIX, id->str);
        if (kl < 0 || (size_t)kl >= sizeof key)
            continue; /* not an id any consumer writes */
        if (lw_rcluster_batch_group(bat, lw_rcluster_keyslot(key, (size_t)kl)) < 0 ||
            lw_rcluster_batch_appendf(bat, "HGETALL %b", key, (size_t)kl) != LW_RCLUSTER_OK) {
            snprintf(errstr, errstr_size, "out of memory");
            err = LW_ERR_NOMEM;
            goto out;
        }
        asked[n++] = id;
    }
    if (n > 0) {
        ce = lw_rcluster_batch_send(bat, why, sizeof why);
        if (ce == LW_RCLUSTER_OK)
            ce = lw_rcluster_batch_recv(bat, why, sizeof why);
        if (ce != LW_RCLUSTER_OK) {
            snprintf(errstr, errstr_size, "redis HGETALL %s*: %s", LW_METRICS_PREFIX, why);
            err = LW_ERR_REDIS;
            goto out;
        }
    }
    for (size_t k = 0; k < n; k++) {
        const redisReply *id = asked[k], *h = lw_rcluster_group_reply(bat, k, 0);
        if (!h)
            continue;
        /* An empty hash is a consumer gone for more than its 15 s EXPIRE; a
         * key of another type is not ours. Both are skipped, not fatal. */
        if (h->type == REDIS_REPLY_ARRAY && h->elements == 0)
            stale[n_stale++] = id;
        if (h->type == REDIS_REPLY_ARRAY)
            for (size_t j = 0; j + 1 < h->elements; j += 2)
                if (h->element[j]->type == REDIS_REPLY_STRING &&
                    h->element[j + 1]->type == REDIS_REPLY_STRING)
                    lw_metrics_agg_add(agg, id->str, h->element[j]->str, h->element[j + 1]->str);
    }
    /* Forget consumers whose hash expired, so the set stays as small as the
     * live group. A consumer that publishes again between our HGETALL and
     * this SREM is gone from the set for a second at most: every publish
     * SADDs it back. A refusal (a read-only ACL user) changes nothing here. */
    for (size_t i = 0; i < n_stale; i++) {
        redisReply *r = NULL;
        ce = lw_rcluster_command(cl, lw_key_slot(LW_METRICS_REGISTRY), &r, why, sizeof why,
                                 "SREM %s %b", LW_METRICS_REGISTRY, stale[i]->str, stale[i]->len);
        freeReplyObject(r);
        if (ce != LW_RCLUSTER_OK) {
            snprintf(errstr, errstr_size, "redis SREM %s: %s", LW_METRICS_REGISTRY, why);
            err = LW_ERR_REDIS;
            goto out;
        }
    }
    *text = lw_metrics_agg_render(agg, counts);
    if (!*text) {
        snprintf(errstr, errstr_size, "out of memory");
        err = LW_ERR_NOMEM;
    }
out:
    lw_rcluster_batch_destroy(bat);
    free(stale);
    free(asked);
    freeReplyObject(ids);
    lw_metrics_agg_destroy(agg);
    return err;
}
