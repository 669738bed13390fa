/*
 * obs.c - loanwire-exposure's own figures, rendered for Prometheus.
 *
 * Until 0.1 the consumer's counters lived only in Redis hashes that expire
 * 15 s after it stops, and loanwire-query summed them: a consumer leaving
 * made the sums drop, which rate() reads as counter resets. Now each process
 * serves its own counters, monotonic for its life, and Prometheus sums across
 * processes itself (resets at a restart are what rate() handles).
 *
 * Threads: the consumer loop writes with relaxed atomic stores; the HTTP
 * thread reads with relaxed loads. A scrape may see one counter from a loop
 * turn newer than another's; each one alone never goes back. librdkafka's
 * statistics arrive as a JSON document on the polling thread (stats_cb); the
 * latest per client is kept under a mutex and parsed (jansson) only when
 * scraped, so the consumer loop never pays for a scrape.
 *
 * Readiness (/readyz) means "this member is doing its share": at least one
 * partition assigned, Redis answered within the last few seconds, no
 * partition fenced, not stalled (lag standing while nothing is consumed) for
 * LW_OBS_STALL_NOT_READY_MS, and the loop turned recently. Health (/healthz)
 * only means the loop turns: a consumer waiting for Redis is unready, not
 * dead, and restarting it would not bring Redis back.
 */
#include "obs_int.h"

#include "loanwire/log.h"
#include "loanwire/prom.h"
#include "loanwire/version.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LW_OBS_STALL_NOT_READY_MS 10000
#define LW_OBS_TICK_NOT_READY_MS  10000
#define LW_OBS_TICK_UNHEALTHY_MS  60000
#define LW_OBS_NCOUNTS            (sizeof(lw_obs_counts_t) / sizeof(uint64_t))

_Static_assert(sizeof(lw_obs_counts_t) % sizeof(uint64_t) == 0, "counters are all uint64_t");

struct lw_obs {
    _Atomic uint64_t counts[LW_OBS_NCOUNTS]; /* an lw_obs_counts_t, field by field */
    _Atomic int64_t lag[LW_OBS_MAX_PARTS];   /* -2 not ours, -1 unknown */
    _Atomic int fenced;
    _Atomic int64_t stalled_ms, redis_rtt_us, redis_ok_ms, tick_ms;
    char topic[256];
    size_t nrules;
    char rule_id[LW_RULES_MAX][LW_ID_MAX + 1];
    pthread_mutex_t stats_lock;
    char *stats[2]; /* latest statistics JSON: consumer, producer */
};

lw_obs_t *lw_obs_new(const char *topic, const lw_rules_t *rules)
{
    lw_obs_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    snprintf(o->topic, sizeof o->topic, "%s", topic);
    o->nrules = lw_rules_count(rules);
    for (size_t i = 0; i < o->nrules; i++)
        snprintf(o->rule_id[i], sizeof o->rule_id[i], "%s", lw_rules_get(rules, i)->id);
    for (int p = 0; p < LW_OBS_MAX_PARTS; p++)
        atomic_init(&o->lag[p], -2);
    atomic_init(&o->tick_ms, lw_mono_ms());
    pthread_mutex_init(&o->stats_lock, NULL);
    return o;
}

void lw_obs_destroy(lw_obs_t *o)
{
    if (!o)
        return;
    pthread_mutex_destroy(&o->stats_lock);
    free(o->stats[0]);
    free(o->stats[1]);
    free(o);
}

/* ---- Writer side ---------------------------------------------------------- */

void lw_obs_counts(lw_obs_t *o, const lw_obs_counts_t *c)
{
    uint64_t v[LW_OBS_NCOUNTS];
    memcpy(v, c, sizeof v);
    for (size_t i = 0; i < LW_OBS_NCOUNTS; i++)
        atomic_store_explicit(&o->counts[i], v[i], memory_order_relaxed);
    atomic_store_explicit(&o->tick_ms, lw_mono_ms(), memory_order_relaxed);
}

void lw_obs_partition(lw_obs_t *o, int32_t p, bool owned, int64_t lag)
{
    if (p >= 0 && p < LW_OBS_MAX_PARTS)
        atomic_store_explicit(&o->lag[p], owned ? (lag < 0 ? -1 : lag) : -2, memory_order_relaxed);
}

void lw_obs_gauges(lw_obs_t *o, int fenced, int64_t stalled_ms, int64_t redis_rtt_us, bool redis_ok)
{
    atomic_store_explicit(&o->fenced, fenced, memory_order_relaxed);
    atomic_store_explicit(&o->stalled_ms, stalled_ms, memory_order_relaxed);
    atomic_store_explicit(&o->redis_rtt_us, redis_rtt_us, memory_order_relaxed);
    if (redis_ok)
        atomic_store_explicit(&o->redis_ok_ms, lw_mono_ms(), memory_order_relaxed);
}

void lw_obs_rdkafka_stats(lw_obs_t *o, bool producer, const char *json, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return; /* the previous document stays: a scrape shows slightly old figures */
    memcpy(copy, json, len);
    copy[len] = '\0';
    pthread_mutex_lock(&o->stats_lock);
    free(o->stats[producer]);
    o->stats[producer] = copy;
    pthread_mutex_unlock(&o->stats_lock);
}

/* ---- Readiness ------------------------------------------------------------ */

static uint64_t count_at(lw_obs_t *o, size_t field_offset)
{
    return atomic_load_explicit(&o->counts[field_offset / sizeof(uint64_t)], memory_order_relaxed);
}
#define COUNT(o, f) count_at((o), offsetof(lw_obs_counts_t, f))

static int assigned(lw_obs_t *o)
{
    int n = 0;
    for (int p = 0; p < LW_OBS_MAX_PARTS; p++)
        n += atomic_load_explicit(&o->lag[p], memory_order_relaxed) != -2;
    return n;
}

bool lw_obs_healthy(lw_obs_t *o, char *why, size_t why_size)
{
    int64_t age = lw_mono_ms() - atomic_load_explicit(&o->tick_ms, memory_order_relaxed);
    if (age > LW_OBS_TICK_UNHEALTHY_MS) {
        snprintf(why, why_size, "consumer loop has not turned for %" PRId64 " ms", age);
        return false;
    }
    snprintf(why, why_size, "ok");
    return true;
}

bool lw_obs_ready(lw_obs_t *o, char *why, size_t why_size)
{
    int64_t now = lw_mono_ms();
    int64_t tick = atomic_load_explicit(&o->tick_ms, memory_order_relaxed);
    int64_t rok = atomic_load_explicit(&o->redis_ok_ms, memory_order_relaxed);
    int64_t stalled = atomic_load_explicit(&o->stalled_ms, memory_order_relaxed);
    int fenced = atomic_load_explicit(&o->fenced, memory_order_relaxed);
    if (now - tick > LW_OBS_TICK_NOT_READY_MS)
        snprintf(why, why_size, "consumer loop busy or blocked for %" PRId64 " ms", now - tick);
    else if (assigned(o) == 0)
        snprintf(why, why_size, "no partition assigned");
    else if (!rok || now - rok > LW_OBS_TICK_NOT_READY_MS)
        snprintf(why, why_size, "Redis has not answered recently");
    else if (fenced > 0)
        snprintf(why, why_size, "%d partition(s) fenced", fenced);
    else if (stalled && now - stalled >= LW_OBS_STALL_NOT_READY_MS)
        snprintf(why, why_size, "stalled for %" PRId64 " s", (now - stalled) / 1000);
    else {
        snprintf(why, why_size, "ok");
        return true;
    }
    return false;
}

/* ---- Rendering ------------------------------------------------------------ */

static bool counter(lw_sbuf_t *b, const char *name, const char *help, uint64_t v)
{
    return lw_prom_family(b, name, "counter", help) && lw_prom_u64(b, name, NULL, v);
}

static bool render_own(lw_obs_t *o, lw_sbuf_t *b)
{
    bool ok = true;
    uint64_t dead = COUNT(o, dead_letters), refused = COUNT(o, refused);
    const char *bi[] = {"version", LW_VERSION, "program", "loanwire-exposure", NULL};
    ok = ok && lw_prom_family(b, "loanwire_build_info", "gauge", "Version of this program.") &&
         lw_prom_u64(b, "loanwire_build_info", bi, 1);
    ok = ok &&
         counter(b, "loanwire_exposure_events_consumed_total",
                 "Events taken from Kafka while their partition was ours.", COUNT(o, consumed));
    ok = ok && counter(b, "loanwire_exposure_events_applied_total",
                       "Events applied to a borrower's state.", COUNT(o, applied));
    ok = ok && counter(b, "loanwire_exposure_events_duplicate_total",
                       "Events already applied (same sequence): skipped.", COUNT(o, duplicates));
    ok = ok && counter(b, "loanwire_exposure_events_stale_total",
                       "Events older than the borrower's state (sequence rule): skipped.",
                       COUNT(o, out_of_order));
    ok = ok && counter(b, "loanwire_exposure_events_fenced_total",
                       "Events dropped uncommitted because their partition was fenced.",
                       COUNT(o, fenced));
    ok = ok && counter(b, "loanwire_exposure_inquiries_consumed_total",
                       "Recorded credit inquiries taken from Kafka.", COUNT(o, inq_consumed));
    ok = ok &&
         counter(b, "loanwire_exposure_inquiries_applied_total",
                 "Recorded credit inquiries applied to a borrower's state.", COUNT(o, inq_applied));
    ok = ok && counter(b, "loanwire_exposure_inquiries_duplicate_total",
                       "Recorded credit inquiries already applied (same inquiry id): skipped.",
                       COUNT(o, inq_duplicates));
    const char *inv[] = {"reason", "invalid", NULL}, *ref[] = {"reason", "refused", NULL};
    ok = ok &&
         lw_prom_family(b, "loanwire_exposure_dead_letters_total", "counter",
                        "Events sent to the dead-letter topic: invalid (decode or "
                        "validation) or refused (by the borrower's state).") &&
         lw_prom_u64(b, "loanwire_exposure_dead_letters_total", inv,
                     dead >= refused ? dead - refused : 0) &&
         lw_prom_u64(b, "loanwire_exposure_dead_letters_total", ref, refused);
    ok = ok &&
         lw_prom_family(b, "loanwire_exposure_alerts_total", "counter", "Alerts raised, by rule.");
    for (size_t i = 0; ok && i < o->nrules; i++) {
        const char *l[] = {"rule", o->rule_id[i], NULL};
        ok = lw_prom_u64(
            b, "loanwire_exposure_alerts_total", l,
            count_at(o, offsetof(lw_obs_counts_t, alerts_by_rule) + i * sizeof(uint64_t)));
    }
    ok = ok && counter(b, "loanwire_exposure_batches_total", "Poll batches written to Redis.",
                       COUNT(o, batches));
    ok = ok && counter(b, "loanwire_exposure_produce_failures_total",
                       "Alerts or dead letters the broker did not take.", COUNT(o, produce_failed));

    ok = ok && lw_prom_family(b, "loanwire_exposure_consumer_lag", "gauge",
                              "High watermark minus the next offset to apply, per assigned "
                              "partition (absent while unknown).");
    int nassigned = 0;
    for (int p = 0; ok && p < LW_OBS_MAX_PARTS; p++) {
        int64_t lag = atomic_load_explicit(&o->lag[p], memory_order_relaxed);
        if (lag == -2)
            continue;
        nassigned++;
        if (lag < 0)
            continue;
        char ps[16];
        snprintf(ps, sizeof ps, "%d", p);
        const char *l[] = {"topic", o->topic, "partition", ps, NULL};
        ok = lw_prom_i64(b, "loanwire_exposure_consumer_lag", l, lag);
    }
    ok = ok &&
         lw_prom_family(b, "loanwire_exposure_partitions_assigned", "gauge",
                        "Partitions of the events topic assigned to this member.") &&
         lw_prom_i64(b, "loanwire_exposure_partitions_assigned", NULL, nassigned);
    ok = ok &&
         lw_prom_family(b, "loanwire_exposure_partitions_fenced", "gauge",
                        "Assigned partitions whose writes Redis refuses (a newer owner).") &&
         lw_prom_i64(b, "loanwire_exposure_partitions_fenced", NULL,
                     atomic_load_explicit(&o->fenced, memory_order_relaxed));
    int64_t st = atomic_load_explicit(&o->stalled_ms, memory_order_relaxed);
    ok = ok &&
         lw_prom_family(b, "loanwire_exposure_stalled_seconds", "gauge",
                        "How long lag has stood while nothing was consumed (0: not stalled).") &&
         lw_prom_i64(b, "loanwire_exposure_stalled_seconds", NULL,
                     st ? (lw_mono_ms() - st) / 1000 : 0);
    ok = ok &&
         lw_prom_family(b, "loanwire_exposure_redis_rtt_seconds", "gauge",
                        "Round trip of the last Redis write.") &&
         lw_prom_double(b, "loanwire_exposure_redis_rtt_seconds", NULL,
                        (double)atomic_load_explicit(&o->redis_rtt_us, memory_order_relaxed) / 1e6);
    return ok;
}

/* ---- librdkafka statistics ----------------------------------------------- */

static int64_t jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

typedef enum {
    BR_RTT_AVG,
    BR_RTT_P99,
    BR_OUTBUF,
    BR_OUTBUF_MSGS,
    BR_WAITRESP,
    BR_STATE,
    BR__CNT
} broker_metric_t;

static const struct {
    const char *name, *help;
} broker_fam[BR__CNT] = {
    {"loanwire_rdkafka_broker_rtt_avg_seconds", "librdkafka: broker round trip, average."},
    {"loanwire_rdkafka_broker_rtt_p99_seconds", "librdkafka: broker round trip, 99th percentile."},
    {"loanwire_rdkafka_broker_outbuf_requests", "librdkafka: requests waiting to be sent."},
    {"loanwire_rdkafka_broker_outbuf_messages", "librdkafka: messages waiting to be sent."},
    {"loanwire_rdkafka_broker_waitresp_requests", "librdkafka: requests sent, not answered."},
    {"loanwire_rdkafka_broker_state", "librdkafka: broker connection state (1 for the current)."},
};

static bool render_brokers(lw_sbuf_t *b, json_t *doc[2], const char *client[2])
{
    bool ok = true;
    for (int m = 0; ok && m < BR__CNT; m++) {
        ok = lw_prom_family(b, broker_fam[m].name, "gauge", broker_fam[m].help);
        for (int c = 0; ok && c < 2; c++) {
            json_t *brokers = doc[c] ? json_object_get(doc[c], "brokers") : NULL;
            const char *bname;
            json_t *br;
            json_object_foreach(brokers, bname, br)
            {
                if (jint(br, "nodeid") < 0)
                    continue; /* the bootstrap placeholders: no figures of their own */
                const char *l[] = {"client", client[c], "broker", bname, NULL, NULL, NULL};
                json_t *rtt = json_object_get(br, "rtt");
                switch ((broker_metric_t)m) {
                case BR_RTT_AVG:
                    ok = ok &&
                         lw_prom_double(b, broker_fam[m].name, l, (double)jint(rtt, "avg") / 1e6);
                    break;
                case BR_RTT_P99:
                    ok = ok &&
                         lw_prom_double(b, broker_fam[m].name, l, (double)jint(rtt, "p99") / 1e6);
                    break;
                case BR_OUTBUF:
                    ok = ok && lw_prom_i64(b, broker_fam[m].name, l, jint(br, "outbuf_cnt"));
                    break;
                case BR_OUTBUF_MSGS:
                    ok = ok && lw_prom_i64(b, broker_fam[m].name, l, jint(br, "outbuf_msg_cnt"));
                    break;
                case BR_WAITRESP:
                    ok = ok && lw_prom_i64(b, broker_fam[m].name, l, jint(br, "waitresp_cnt"));
                    break;
                default:
                    l[4] = "state";
                    l[5] = jstr(br, "state");
                    ok = ok && lw_prom_i64(b, broker_fam[m].name, l, 1);
                }
            }
        }
    }
    return ok;
}

static bool render_partitions(lw_sbuf_t *b, json_t *cons)
{
    static const struct {
        const char *name, *field, *help;
    } fam[] = {
        {"loanwire_rdkafka_partition_consumer_lag", "consumer_lag",
         "librdkafka: high watermark minus the committed offset."},
        {"loanwire_rdkafka_partition_fetchq_messages", "fetchq_cnt",
         "librdkafka: messages fetched, not yet polled."},
        {"loanwire_rdkafka_partition_fetchq_bytes", "fetchq_size",
         "librdkafka: bytes fetched, not yet polled."},
    };
    bool ok = true;
    json_t *topics = cons ? json_object_get(cons, "topics") : NULL;
    for (size_t m = 0; ok && m < sizeof fam / sizeof fam[0]; m++) {
        ok = lw_prom_family(b, fam[m].name, "gauge", fam[m].help);
        const char *tname;
        json_t *t;
        json_object_foreach(topics, tname, t)
        {
            const char *pid;
            json_t *p;
            json_t *parts = json_object_get(t, "partitions");
            json_object_foreach(parts, pid, p)
            {
                int64_t v = jint(p, fam[m].field);
                if (!strcmp(pid, "-1") || v < 0)
                    continue; /* the unassigned-messages slot; -1: not known yet */
                const char *l[] = {"topic", tname, "partition", pid, NULL};
                ok = ok && lw_prom_i64(b, fam[m].name, l, v);
            }
        }
    }
    return ok;
}

static bool render_rdkafka(lw_obs_t *o, lw_sbuf_t *b)
{
    char *text[2];
    json_t *doc[2] = {NULL, NULL};
    const char *client[2] = {"consumer", "producer"};
    pthread_mutex_lock(&o->stats_lock);
    for (int c = 0; c < 2; c++)
        text[c] = o->stats[c] ? strdup(o->stats[c]) : NULL;
    pthread_mutex_unlock(&o->stats_lock);
    for (int c = 0; c < 2; c++) {
        if (text[c])
            doc[c] = json_loads(text[c], 0, NULL);
        free(text[c]);
    }
    bool ok = lw_prom_family(b, "loanwire_rdkafka_replyq", "gauge",
                             "librdkafka: operations waiting to be served by a poll.");
    for (int c = 0; ok && c < 2; c++)
        if (doc[c]) {
            const char *l[] = {"client", client[c], NULL};
            ok = lw_prom_i64(b, "loanwire_rdkafka_replyq", l, jint(doc[c], "replyq"));
        }
    ok = ok && lw_prom_family(b, "loanwire_rdkafka_msg_cnt", "gauge",
                              "librdkafka: messages in the producer's queues.");
    if (ok && doc[1]) {
        const char *l[] = {"client", "producer", NULL};
        ok = lw_prom_i64(b, "loanwire_rdkafka_msg_cnt", l, jint(doc[1], "msg_cnt"));
    }
    ok = ok && render_brokers(b, doc, client);
    json_t *cg = doc[0] ? json_object_get(doc[0], "cgrp") : NULL;
    ok = ok && lw_prom_family(b, "loanwire_rdkafka_cgrp_state", "gauge",
                              "librdkafka: consumer-group state (1 for the current).");
    if (ok && cg) {
        const char *l[] = {"state", jstr(cg, "state"), "join_state", jstr(cg, "join_state"), NULL};
        ok = lw_prom_i64(b, "loanwire_rdkafka_cgrp_state", l, 1);
    }
    ok = ok && lw_prom_family(b, "loanwire_rdkafka_cgrp_rebalances_total", "counter",
                              "librdkafka: rebalances of this member.");
    if (ok && cg)
        ok = lw_prom_i64(b, "loanwire_rdkafka_cgrp_rebalances_total", NULL,
                         jint(cg, "rebalance_cnt"));
    ok = ok && lw_prom_family(b, "loanwire_rdkafka_cgrp_assignment_size", "gauge",
                              "librdkafka: partitions assigned to this member.");
    if (ok && cg)
        ok = lw_prom_i64(b, "loanwire_rdkafka_cgrp_assignment_size", NULL,
                         jint(cg, "assignment_size"));
    ok = ok && render_partitions(b, doc[0]);
    json_decref(doc[0]);
    json_decref(doc[1]);
    return ok;
}

bool lw_obs_render(lw_obs_t *o, lw_sbuf_t *b)
{
    char why[160];
    bool ready = lw_obs_ready(o, why, sizeof why);
    return render_own(o, b) &&
           lw_prom_family(b, "loanwire_exposure_ready", "gauge", "1 when /readyz answers 200.") &&
           lw_prom_u64(b, "loanwire_exposure_ready", NULL, ready) && render_rdkafka(o, b);
}
