/*
 * source.c - where loanwire-alerts reads from: the Kafka alerts topic or the
 * Redis alert stream, with acknowledgement only after printing.
 *
 * Kafka: a consumer group with enable.auto.offset.store=false; an offset is
 * stored once its alert is printed (or skipped: filtered out, a repeat, not
 * an alert) and stdout flushed, and committed by auto-commit and, with
 * explicit offsets checked per partition, synchronously on revoke and at the
 * end before close. After --count the run still consumes what it would skip,
 * holding each partition at the first alert it would print, so the next run
 * starts exactly there. Without --follow the run ends when every assigned
 * partition reached its end.
 * Redis: XREADGROUP on a stream consumer group; on start the consumer's own
 * pending entries (read but never acknowledged) are delivered again before
 * new ones, then XACK after printing. Entries read but not printed because
 * --count was reached stay pending, so the next run starts with them.
 *
 * Redis Cluster (detected from the URL of any node): loanwire-exposure writes
 * an alert to the stream of its borrower's hash slot, lw:alerts:{TAG}, so
 * there are up to 16384 streams and XREAD, XREADGROUP and blocking reads are
 * single-slot. The run polls instead: every LW_CLUSTER_POLL_MS it reads every
 * slot's stream from where it stopped (one XRANGE per slot, pipelined per
 * master, all masters at once; loanwire/streams.h merges them by entry id).
 * Time order across masters needs a watermark: before each poll the run asks
 * every master for its TIME; an entry a master records later has an id at or
 * above that time, so only entries below the smallest of them are printed,
 * and the rest wait for the next poll. Without a stream consumer group there
 * is nothing to resume from: a run starts at the oldest (--from-beginning) or
 * at the masters' clocks (the default), and --group / --consumer are refused
 * with a pointer to --source kafka, whose consumer group resumes exactly.
 * Per-slot stream groups were not built: 16384 XGROUP CREATEs (MKSTREAM would
 * make 16384 empty streams), groups missing on streams created later, and an
 * XREADGROUP per slot per poll that writes (the pending list) to every
 * master and its replica, for what the Kafka topic already gives.
 */
#include "loanwire/alerts.h"
#include "loanwire/codec.h"
#include "loanwire/conf.h"
#include "loanwire/json.h"
#include "loanwire/log.h"
#include "loanwire/redis.h"
#include "loanwire/streams.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define LW_SEEN_CAPACITY  100000
#define LW_REDIS_BATCH    100
#define LW_REDIS_CONSUMER "loanwire-alerts"
/* Between two polls of a cluster's streams: each poll is one XRANGE per slot
 * (16384 commands, ~5461 per master of three), so twice a second costs each
 * master ~11k cheap commands/s, about 1 % of a core. */
#define LW_CLUSTER_POLL_MS 500
/* Entries asked of each stream by a poll's first round. */
#define LW_CLUSTER_PAGE 64

void lw_alerts_conf_init(lw_alerts_conf_t *conf)
{
    memset(conf, 0, sizeof *conf);
    conf->source = LW_ALERTS_KAFKA;
    conf->brokers = lw_conf_default_bootstrap();
    conf->redis_url = lw_conf_default_redis();
    conf->topic = LW_TOPIC_ALERTS;
    conf->consumer = NULL; /* LW_REDIS_CONSUMER unless given */
}

typedef struct lw_printer {
    const lw_alerts_conf_t *conf;
    FILE *out;
    lw_alerts_seen_t *seen;
    uint64_t printed;
} lw_printer_t;

/* Prints al when it passes the filter and is not a repeat. Returns 1 when
 * printed, 0 when skipped, -1 when writing failed. */
static int lw_print_alert(lw_printer_t *p, const lw_alert_t *al)
{
    char line[4096];
    int n;

    if (!lw_alerts_filter_match(p->conf->filter, al))
        return 0;
    if (!lw_alerts_seen_add(p->seen, al->alert_id))
        return 0;
    if (p->conf->json)
        n = lw_alert_to_json(al, line, sizeof line);
    else
        n = lw_alert_format_line(al, line, sizeof line);
    if (n < 0)
        return -1;
    if (fprintf(p->out, "%s\n", line) < 0)
        return -1;
    p->printed++;
    return 1;
}

static bool lw_count_reached(const lw_printer_t *p)
{
    return p->conf->count > 0 && p->printed >= p->conf->count;
}

/* ---- Kafka --------------------------------------------------------------- */

/* True when al would be printed now: it passes the filter and is no repeat. */
static bool lw_would_print(const lw_printer_t *p, const lw_alert_t *al)
{
    return lw_alerts_filter_match(p->conf->filter, al) &&
           !lw_alerts_seen_has(p->seen, al->alert_id);
}

/* What this run knows of one partition of the topic. */
typedef struct lw_kpart {
    bool owned;        /* in the current assignment */
    bool at_end;       /* partition EOF seen since its last message */
    bool held;         /* --count reached and its next message would be printed */
    int64_t next;      /* offset after the last printed-or-skipped message; -1: none */
    int64_t committed; /* what this run last committed for it; -1: nothing */
} lw_kpart_t;

typedef struct lw_kafka {
    const lw_alerts_conf_t *conf;
    lw_kpart_t *parts; /* indexed by partition number */
    int n;
    lw_err_t err; /* first failure seen in the rebalance callback */
    char errstr[512];
} lw_kafka_t;

/* The state of partition, grown on demand; NULL when out of memory. */
static lw_kpart_t *lw_kpart(lw_kafka_t *k, int partition)
{
    if (partition < 0)
        return NULL;
    if (partition >= k->n) {
        int nn = partition + 16;
        lw_kpart_t *na = realloc(k->parts, (size_t)nn * sizeof *na);
        if (!na)
            return NULL;
        for (int i = k->n; i < nn; i++)
            na[i] = (lw_kpart_t){false, false, false, -1, -1};
        k->parts = na;
        k->n = nn;
    }
    return &k->parts[partition];
}

/* True when partitions are assigned and every one reached its end (or, when
 * held counts, is held at the first message a later run must print). */
static bool lw_kafka_done(rd_kafka_t *rk, const lw_kafka_t *k, bool held_counts)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    bool all = true;

    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return false;
    if (a->cnt == 0)
        all = false;
    for (int i = 0; i < a->cnt && all; i++) {
        int p = a->elems[i].partition;
        all = p >= 0 && p < k->n && (k->parts[p].at_end || (held_counts && k->parts[p].held));
    }
    rd_kafka_topic_partition_list_destroy(a);
    return all;
}

static bool lw_in_list(const rd_kafka_topic_partition_list_t *l, int partition)
{
    for (int i = 0; l && i < l->cnt; i++)
        if (l->elems[i].partition == partition)
            return true;
    return false;
}

/*
 * Commits synchronously, for each owned partition (of only, or all when only
 * is NULL), the offset after its last printed-or-skipped message, and checks
 * the result of every partition. Auto-commit also runs, but it is
 * asynchronous and its failures go unseen; this one completes before close.
 */
static lw_err_t lw_kafka_commit(rd_kafka_t *rk, lw_kafka_t *k,
                                const rd_kafka_topic_partition_list_t *only, char *errstr,
                                size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    rd_kafka_resp_err_t cerr;
    char where[32] = "";

    for (int i = 0; i < k->n; i++) {
        const lw_kpart_t *kp = &k->parts[i];
        if (kp->owned && kp->next >= 0 && kp->next != kp->committed &&
            (!only || lw_in_list(only, i)))
            rd_kafka_topic_partition_list_add(l, k->conf->topic, i)->offset = kp->next;
    }
    if (l->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(l);
        return LW_OK;
    }
    cerr = rd_kafka_commit(rk, l, 0);
    for (int i = 0; i < l->cnt && !cerr; i++) {
        if (l->elems[i].err) {
            cerr = l->elems[i].err;
            snprintf(where, sizeof where, " [%d]", (int)l->elems[i].partition);
        }
    }
    if (cerr) {
        snprintf(errstr, errstr_size,
                 "kafka: committing offsets of %s%s: %s (a later run of the group prints "
                 "again what was printed since the last commit)",
                 k->conf->topic, where, rd_kafka_err2str(cerr));
        rd_kafka_topic_partition_list_destroy(l);
        return LW_ERR_KAFKA;
    }
    for (int i = 0; i < l->cnt; i++)
        k->parts[l->elems[i].partition].committed = l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return LW_OK;
}

static void lw_kafka_fail(lw_kafka_t *k, lw_err_t err, const char *msg)
{
    if (k->err == LW_OK) {
        k->err = err;
        snprintf(k->errstr, sizeof k->errstr, "%s", msg);
    }
}

/*
 * Revoke: what was printed from the partitions is committed while they are
 * still ours (not when lost: another member may own them by now).
 * Assignment: a partition the group never committed starts at the oldest
 * (--from-beginning) or the newest offset, resolved here and stored at once,
 * so the group commits a position for it even if this run prints nothing
 * from it; the next run then resumes there instead of re-resolving "latest"
 * and skipping what arrived in between. "Never committed" must be known, not
 * guessed: when the committed offsets cannot be read, the partition is
 * assigned without an offset so that the consumer reads it itself.
 */
static void lw_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    lw_kafka_t *k = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_topic_partition_list_t *fresh;
    rd_kafka_resp_err_t cerr;
    char errstr[512];

    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (!rd_kafka_assignment_lost(rk) &&
            lw_kafka_commit(rk, k, parts, errstr, sizeof errstr) != LW_OK)
            lw_kafka_fail(k, LW_ERR_KAFKA, errstr);
        for (int i = 0; i < parts->cnt; i++) {
            int p = parts->elems[i].partition;
            if (p >= 0 && p < k->n)
                k->parts[p].owned = false;
        }
        if (coop)
            rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
        else
            rd_kafka_assign(rk, NULL);
        return;
    }
    fresh = rd_kafka_topic_partition_list_new(parts->cnt);
    cerr = rd_kafka_committed(rk, parts, 10000);
    if (cerr)
        lw_warn("kafka: reading committed offsets: %s (the consumer reads them itself)",
                rd_kafka_err2str(cerr));
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        lw_kpart_t *kp = lw_kpart(k, p->partition);
        int64_t lo, hi;

        if (!kp) {
            lw_kafka_fail(k, LW_ERR_NOMEM, "out of memory");
            continue;
        }
        *kp = (lw_kpart_t){true, false, false, -1, -1};
        if (cerr || p->err) {
            if (p->err)
                lw_warn("kafka: committed offset of %s [%d]: %s (the consumer reads it itself)",
                        p->topic, (int)p->partition, rd_kafka_err2str(p->err));
            p->offset = RD_KAFKA_OFFSET_INVALID;
            p->err = RD_KAFKA_RESP_ERR_NO_ERROR;
            continue;
        }
        if (p->offset >= 0)
            continue;
        if (rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi, 10000)) {
            p->offset = k->conf->from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
            continue;
        }
        p->offset = k->conf->from_beginning ? lo : hi;
        kp->next = p->offset;
        rd_kafka_topic_partition_list_add(fresh, p->topic, p->partition)->offset = p->offset;
    }
    if (coop)
        rd_kafka_error_destroy(rd_kafka_incremental_assign(rk, parts));
    else
        rd_kafka_assign(rk, parts);
    if (fresh->cnt > 0 && (cerr = rd_kafka_offsets_store(rk, fresh)) != 0)
        lw_warn("kafka: storing start offsets: %s", rd_kafka_err2str(cerr));
    rd_kafka_topic_partition_list_destroy(fresh);
}

/* After --count, skipped messages are still consumed for this long at most
 * so their offsets are committed too; past it they are simply left. */
#define LW_DRAIN_MS 10000

static lw_err_t lw_run_kafka(const lw_alerts_conf_t *conf, lw_printer_t *pr, char *errstr,
                             size_t errstr_size)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    lw_codec_t *codec = NULL;
    lw_kafka_t k = {conf, NULL, 0, LW_OK, ""};
    lw_err_t err = LW_OK;
    char rderr[512];
    int64_t started = lw_mono_ms(), drain_until = -1;
    const char *group = conf->group;
    char defgroup[128];

    if (!group) {
        const char *user = getenv("USER");
        snprintf(defgroup, sizeof defgroup, "loanwire-alerts-%s", user && *user ? user : "default");
        group = defgroup;
    }
    struct {
        const char *k, *v;
    } base[] = {
        {"bootstrap.servers", conf->brokers},
        {"group.id", group},
        {"client.id", "loanwire-alerts"},
        {"enable.auto.offset.store", "false"},
        {"enable.auto.commit", "true"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", conf->from_beginning ? "earliest" : "latest"},
    };
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        if (rd_kafka_conf_set(kc, base[i].k, base[i].v, rderr, sizeof rderr) != RD_KAFKA_CONF_OK) {
            snprintf(errstr, errstr_size, "%s: %s", base[i].k, rderr);
            rd_kafka_conf_destroy(kc);
            return LW_ERR_CONFIG;
        }
    }
    if (conf->kafka_conf_file &&
        lw_conf_load_file(kc, conf->kafka_conf_file, errstr, errstr_size) != LW_OK) {
        rd_kafka_conf_destroy(kc);
        return LW_ERR_CONFIG;
    }
    for (const char *const *kv = conf->kafka_props; kv && *kv; kv++) {
        if (lw_conf_set_kv(kc, *kv, errstr, errstr_size) != LW_OK) {
            rd_kafka_conf_destroy(kc);
            return LW_ERR_CONFIG;
        }
    }
    rd_kafka_conf_set_rebalance_cb(kc, lw_rebalance);
    rd_kafka_conf_set_opaque(kc, &k);
    codec = lw_codec_new(errstr, errstr_size);
    if (!codec) {
        rd_kafka_conf_destroy(kc);
        return LW_ERR_SCHEMA;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, rderr, sizeof rderr);
    if (!rk) {
        snprintf(errstr, errstr_size, "kafka: %s", rderr);
        rd_kafka_conf_destroy(kc);
        lw_codec_destroy(codec);
        return LW_ERR_KAFKA;
    }
    rd_kafka_poll_set_consumer(rk);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, conf->topic, RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(rk, topics) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errstr_size, "kafka: cannot subscribe to %s", conf->topic);
        err = LW_ERR_KAFKA;
        goto done;
    }

    /*
     * Once --count is reached the run drains: it keeps consuming what it would
     * skip anyway (filtered out, repeats, non-alerts) so that their offsets are
     * committed too, and holds each partition at its first message that would
     * be printed, storing nothing past it. Otherwise a repeat right after the
     * last printed alert would be printed by the next run, whose set of seen
     * ids starts empty.
     */
    while (!lw_stop_requested()) {
        bool draining = lw_count_reached(pr);
        rd_kafka_message_t *m;
        lw_kpart_t *kp;

        if (k.err != LW_OK) {
            snprintf(errstr, errstr_size, "%s", k.errstr);
            err = k.err;
            break;
        }
        if (draining) {
            if (drain_until < 0)
                drain_until = lw_mono_ms() + LW_DRAIN_MS;
            if (lw_mono_ms() > drain_until || lw_kafka_done(rk, &k, true))
                break;
        }
        m = rd_kafka_consumer_poll(rk, 200);
        if (!m) {
            if (!conf->follow && !draining && lw_kafka_done(rk, &k, false))
                break;
            if (!conf->follow && k.n == 0 && lw_mono_ms() - started > 60000) {
                snprintf(errstr, errstr_size,
                         "kafka %s: no partition of %s assigned after 60 s (broker up? "
                         "./deploy/stack.sh up)",
                         conf->brokers, conf->topic);
                err = LW_ERR_KAFKA;
                break;
            }
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if ((kp = lw_kpart(&k, m->partition)) != NULL)
                kp->at_end = true;
            rd_kafka_message_destroy(m);
            if (!conf->follow && !draining && lw_kafka_done(rk, &k, false))
                break;
            continue;
        }
        if (m->err) {
            bool fatal = m->err == RD_KAFKA_RESP_ERR__FATAL ||
                         (!conf->follow && (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                                            m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
            if (fatal) {
                snprintf(errstr, errstr_size, "kafka %s topic %s: %s", conf->brokers, conf->topic,
                         rd_kafka_message_errstr(m));
                err = LW_ERR_KAFKA;
                rd_kafka_message_destroy(m);
                break;
            }
            lw_warn("kafka: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if ((kp = lw_kpart(&k, m->partition)) == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            err = LW_ERR_NOMEM;
            rd_kafka_message_destroy(m);
            break;
        }
        kp->at_end = false;
        if (kp->held) {
            /* Behind a message a later run must print: not ours to pass. */
            rd_kafka_message_destroy(m);
            continue;
        }
        {
            lw_alert_t al;
            char derr[256];
            rd_kafka_resp_err_t serr;

            if (lw_codec_decode_alert(codec, m->payload, m->len, &al, derr, sizeof derr) != LW_OK) {
                /* Left in the topic for inspection; this subscriber moves on. */
                lw_warn("%s [%d] offset %lld: not an alert: %s", conf->topic, (int)m->partition,
                        (long long)m->offset, derr);
            } else if (draining && lw_would_print(pr, &al)) {
                kp->held = true;
                rd_kafka_message_destroy(m);
                continue;
            } else if (lw_print_alert(pr, &al) < 0 || fflush(pr->out) != 0) {
                snprintf(errstr, errstr_size, "writing output: %s", strerror(errno));
                err = LW_ERR_IO;
                rd_kafka_message_destroy(m);
                break;
            }
            /* Printed (and flushed) or deliberately skipped: done with it. */
            serr = rd_kafka_offset_store(m->rkt, m->partition, m->offset);
            if (serr)
                lw_warn("kafka: storing offset %lld of %s [%d]: %s", (long long)m->offset + 1,
                        conf->topic, (int)m->partition, rd_kafka_err2str(serr));
            else
                kp->next = m->offset + 1;
        }
        rd_kafka_message_destroy(m);
    }

done:
    if (lw_kafka_commit(rk, &k, NULL, rderr, sizeof rderr) != LW_OK) {
        if (err == LW_OK) {
            snprintf(errstr, errstr_size, "%s", rderr);
            err = LW_ERR_KAFKA;
        } else {
            lw_warn("%s", rderr);
        }
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_topic_partition_list_destroy(topics);
    rd_kafka_destroy(rk);
    lw_codec_destroy(codec);
    free(k.parts);
    return err;
}

/* ---- Redis --------------------------------------------------------------- */

static redisContext *lw_alerts_redis_connect(const lw_redis_url_t *u, char *errstr,
                                             size_t errstr_size)
{
    lw_err_t err;
    redisContext *rc = lw_redis_connect(u, 5000, &err, errstr, errstr_size);
    if (!rc && err == LW_ERR_TRANSIENT) {
        size_t n = strlen(errstr);
        snprintf(errstr + n, errstr_size - n, " (start it with ./deploy/stack.sh up)");
    }
    return rc;
}

static const char *lw_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING &&
            strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1]->str;
    return NULL;
}

/* Creates the group (at the stream's start or its end) unless it exists. */
static lw_err_t lw_group_ensure(redisContext *rc, const char *group, bool from_beginning,
                                char *errstr, size_t errstr_size)
{
    redisReply *r = redisCommand(rc, "XGROUP CREATE %s %s %s MKSTREAM", LW_REDIS_ALERT_STREAM,
                                 group, from_beginning ? "0" : "$");
    lw_err_t err = LW_OK;

    if (!r) {
        snprintf(errstr, errstr_size, "redis XGROUP CREATE: %s", rc->errstr);
        return LW_ERR_REDIS;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
        snprintf(errstr, errstr_size, "redis XGROUP CREATE %s %s: %s", LW_REDIS_ALERT_STREAM, group,
                 r->str);
        err = LW_ERR_REDIS;
    }
    freeReplyObject(r);
    return err;
}

/* Handles one XREADGROUP reply. *n_entries gets how many entries it held.
 * Acknowledges what was printed or skipped. */
static lw_err_t lw_redis_batch(redisContext *rc, const lw_alerts_conf_t *conf, const char *group,
                               lw_printer_t *pr, redisReply *r, size_t *n_entries, char *errstr,
                               size_t errstr_size)
{
    const redisReply *entries;
    const char **ack;
    size_t nack = 0;
    lw_err_t err = LW_OK;

    *n_entries = 0;
    if (r->type == REDIS_REPLY_NIL)
        return LW_OK;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2) {
        snprintf(errstr, errstr_size, "redis XREADGROUP: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        return LW_ERR_REDIS;
    }
    entries = r->element[0]->element[1];
    if (entries->type != REDIS_REPLY_ARRAY)
        return LW_OK;
    *n_entries = entries->elements;
    ack = calloc(entries->elements + 3, sizeof *ack);
    if (!ack) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    ack[nack++] = "XACK";
    ack[nack++] = LW_REDIS_ALERT_STREAM;
    ack[nack++] = group;
    for (size_t i = 0; i < entries->elements && !lw_count_reached(pr); i++) {
        const redisReply *e = entries->element[i];
        const char *js;
        lw_alert_t al;
        lw_field_error_t ferr;

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        /* A pending entry deleted from the stream comes back with nil fields. */
        js = lw_field(e->element[1], "json");
        if (!js) {
            lw_warn("%s %s: entry without a json field, skipped", LW_REDIS_ALERT_STREAM,
                    e->element[0]->str);
        } else if (lw_alert_from_json(js, strlen(js), &al, &ferr) != LW_OK) {
            lw_warn("%s %s: field %s: %s, skipped", LW_REDIS_ALERT_STREAM, e->element[0]->str,
                    ferr.field, ferr.reason);
        } else if (lw_print_alert(pr, &al) < 0) {
            snprintf(errstr, errstr_size, "writing output: %s", strerror(errno));
            err = LW_ERR_IO;
            break;
        }
        ack[nack++] = e->element[0]->str;
    }
    if (fflush(pr->out) != 0) {
        snprintf(errstr, errstr_size, "writing output: %s", strerror(errno));
        err = LW_ERR_IO;
    }
    /* Only what reached stdout is acknowledged (when the write failed the
     * last entries may be lost to the pipe, so acknowledge nothing). */
    if (err == LW_OK && nack > 3) {
        redisReply *ar = redisCommandArgv(rc, (int)nack, ack, NULL);
        if (!ar || ar->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "redis XACK: %s", ar ? ar->str : rc->errstr);
            err = LW_ERR_REDIS;
        }
        if (ar)
            freeReplyObject(ar);
    }
    free(ack);
    (void)conf;
    return err;
}

/* ---- Redis Cluster: the per-slot streams, polled ------------------------------ */

static lw_err_t lw_run_redis_cluster(const lw_alerts_conf_t *conf, lw_printer_t *pr,
                                     lw_rcluster_t *cl, char *errstr, size_t errstr_size)
{
    lw_alert_merge_t *am = NULL;
    lw_err_t err = LW_OK;
    uint64_t now = 0;

    if (conf->group || conf->consumer) {
        snprintf(errstr, errstr_size,
                 "--source redis on a Redis Cluster reads the per-slot alert streams without a "
                 "stream consumer group, so --group and --consumer do not apply; for a "
                 "subscription that resumes where it stopped use --source kafka "
                 "(consumers/alerts/README.md)");
        lw_rcluster_destroy(cl);
        return LW_ERR_CONFIG;
    }
    /* the start: the oldest entry, or the masters' clocks now */
    while ((err = lw_alert_streams_clock(cl, &now, errstr, errstr_size)) != LW_OK) {
        if (!conf->follow || lw_stop_requested())
            goto out;
        lw_warn("%s; retrying", errstr);
        sleep(1);
    }
    if (!(am = lw_alert_merge_new(cl, false))) {
        snprintf(errstr, errstr_size, "out of memory");
        err = LW_ERR_NOMEM;
        goto out;
    }
    lw_smerge_t *m = lw_alert_merge_engine(am);
    lw_smerge_start(m, conf->from_beginning ? LW_SFROM_OPEN : LW_SFROM_INCL, (lw_sid_t){now, 0});
    lw_smerge_first_page(m, LW_CLUSTER_PAGE);
    lw_smerge_hint(m, LW_CLUSTER_PAGE);
    lw_info("Redis Cluster: following the %zu per-slot alert streams by polling every %d ms",
            lw_alert_streams_count(cl), LW_CLUSTER_POLL_MS);
    while (!lw_stop_requested() && !lw_count_reached(pr)) {
        lw_sid_t bound, id;
        size_t stream;
        const redisReply *e;
        bool end = false;

        /* the watermark before the reads: later entries are at or above it */
        if ((err = lw_alert_streams_clock(cl, &now, errstr, errstr_size)) == LW_OK) {
            bound = (lw_sid_t){now, 0};
            lw_smerge_rearm(m);
            while (!end && !lw_count_reached(pr)) {
                /* a run that does not follow prints everything there is */
                err = lw_alert_merge_next(am, conf->follow ? &bound : NULL, &id, &stream, &e, &end,
                                          errstr, errstr_size);
                if (err != LW_OK || end)
                    break;
                const char *js = lw_field(e->element[1], "json");
                char key[64];
                lw_alert_t al;
                lw_field_error_t ferr;
                lw_alert_stream_key(cl, stream, key, sizeof key);
                if (!js) {
                    lw_warn("%s %s: entry without a json field, skipped", key, e->element[0]->str);
                } else if (lw_alert_from_json(js, strlen(js), &al, &ferr) != LW_OK) {
                    lw_warn("%s %s: field %s: %s, skipped", key, e->element[0]->str, ferr.field,
                            ferr.reason);
                } else if (lw_print_alert(pr, &al) < 0) {
                    snprintf(errstr, errstr_size, "writing output: %s", strerror(errno));
                    err = LW_ERR_IO;
                    goto out;
                }
            }
            if (fflush(pr->out) != 0) {
                snprintf(errstr, errstr_size, "writing output: %s", strerror(errno));
                err = LW_ERR_IO;
                goto out;
            }
        }
        if (err != LW_OK) {
            if (!conf->follow)
                goto out;
            lw_warn("%s; retrying", errstr);
            err = LW_OK;
            sleep(1);
            continue;
        }
        if (!conf->follow)
            break; /* caught up */
        usleep(LW_CLUSTER_POLL_MS * 1000);
    }
    err = LW_OK;
out:
    lw_alert_merge_destroy(am);
    lw_rcluster_destroy(cl);
    return err;
}

static lw_err_t lw_run_redis(const lw_alerts_conf_t *conf, lw_printer_t *pr, char *errstr,
                             size_t errstr_size)
{
    lw_redis_url_t u;
    redisContext *rc = NULL;
    lw_err_t err;
    const char *group = conf->group ? conf->group : "loanwire-alerts";
    const char *consumer = conf->consumer ? conf->consumer : LW_REDIS_CONSUMER;
    bool pending_done = false;

    if ((err = lw_redis_url_parse(conf->redis_url, &u, errstr, errstr_size)) != LW_OK)
        return err;
    {
        /* A cluster has a stream per slot: polled, without a group. */
        lw_rcluster_t *cl = NULL;
        lw_rcluster_err_t ce = lw_rcluster_new(&u, NULL, &cl, errstr, errstr_size);
        if (ce != LW_RCLUSTER_OK && !lw_rcluster_err_is_retriable(ce))
            return LW_ERR_REDIS;
        if (cl && lw_rcluster_is_cluster(cl))
            return lw_run_redis_cluster(conf, pr, cl, errstr, errstr_size);
        lw_rcluster_destroy(cl); /* a single Redis (or not up yet): the group below */
    }
    while (!lw_stop_requested() && !lw_count_reached(pr)) {
        redisReply *r;
        size_t n;
        char countbuf[24];
        uint64_t left = conf->count ? conf->count - pr->printed : LW_REDIS_BATCH;

        if (!rc) {
            rc = lw_alerts_redis_connect(&u, errstr, errstr_size);
            if (rc)
                err = lw_group_ensure(rc, group, conf->from_beginning, errstr, errstr_size);
            if (!rc || err != LW_OK) {
                if (!conf->follow)
                    goto out;
                lw_warn("%s; retrying", errstr);
                redisFree(rc);
                rc = NULL;
                err = LW_OK;
                sleep(1);
                continue;
            }
            pending_done = false; /* after a reconnect, re-read our pending first */
        }
        snprintf(countbuf, sizeof countbuf, "%llu",
                 (unsigned long long)(left < LW_REDIS_BATCH ? left : LW_REDIS_BATCH));
        if (pending_done && conf->follow)
            r = redisCommand(rc, "XREADGROUP GROUP %s %s COUNT %s BLOCK 1000 STREAMS %s >", group,
                             consumer, countbuf, LW_REDIS_ALERT_STREAM);
        else
            r = redisCommand(rc, "XREADGROUP GROUP %s %s COUNT %s STREAMS %s %s", group, consumer,
                             countbuf, LW_REDIS_ALERT_STREAM, pending_done ? ">" : "0");
        if (!r) {
            snprintf(errstr, errstr_size, "redis XREADGROUP: %s", rc->errstr);
            err = LW_ERR_REDIS;
        } else {
            err = lw_redis_batch(rc, conf, group, pr, r, &n, errstr, errstr_size);
            freeReplyObject(r);
        }
        if (err == LW_ERR_REDIS && rc->err && conf->follow) {
            lw_warn("%s; reconnecting", errstr);
            redisFree(rc);
            rc = NULL;
            err = LW_OK;
            sleep(1);
            continue;
        }
        if (err != LW_OK)
            goto out;
        if (n == 0) {
            if (!pending_done)
                pending_done = true;
            else if (!conf->follow)
                break; /* caught up */
        }
    }
    err = LW_OK;
out:
    redisFree(rc);
    return err;
}

lw_err_t lw_alerts_run(const lw_alerts_conf_t *conf, FILE *out, uint64_t *printed, char *errstr,
                       size_t errstr_size)
{
    lw_printer_t pr = {conf, out, NULL, 0};
    lw_err_t err;

    pr.seen = lw_alerts_seen_new(LW_SEEN_CAPACITY);
    if (!pr.seen) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    if (conf->source == LW_ALERTS_REDIS)
        err = lw_run_redis(conf, &pr, errstr, errstr_size);
    else
        err = lw_run_kafka(conf, &pr, errstr, errstr_size);
    if (printed)
        *printed = pr.printed;
    lw_alerts_seen_destroy(pr.seen);
    return err;
}
