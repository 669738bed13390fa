/*
 * topics_main.c - loanwire-topics: create, list, describe (and delete) the
 * Kafka topics Loanwire uses, through librdkafka's Admin API.
 *
 *   loanwire.loan-events   6 partitions, retention.ms=-1 (the log is the
 *                          source of truth: bureau state is rebuilt from it)
 *   loanwire.alerts        3 partitions, broker's default retention
 *   loanwire.dead-letters  1 partition,  broker's default retention
 *   loanwire.inquiries     as many partitions as the events topic,
 *                          retention.ms=-1: every look-up is a record the
 *                          borrowers' state is rebuilt from too (issue 20);
 *                          the same count keeps a borrower's inquiries in the
 *                          same partition number as its loan events
 * All with cleanup.policy=delete. "create" is idempotent: a topic that is
 * already there is reported as "exists" and is not an error. "create" and
 * "delete" return once the cluster metadata shows the topics ready (every
 * partition led) or gone, so what runs next sees them that way.
 *
 * Replication follows the cluster unless told: RF = min(3, brokers), and
 * min.insync.replicas = 2 once RF >= 3, so with the producers' acks=all an
 * acknowledged event is on two brokers and one broker may fail without
 * stopping writes or losing anything; on one broker RF 1 (nothing else fits).
 * The broker count comes from the metadata, and the choice is printed.
 *
 * "add-partitions" grows the events topic (CreatePartitions). Kafka never
 * shrinks a topic and never moves records: new events of a key whose
 * hash now falls on a new partition go there, old ones stay put
 * (consumers/README.md, "Adding partitions", says why state stays exact).
 */
#include "loanwire/conf.h"
#include "loanwire/log.h"
#include "loanwire/version.h"

#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LW_MAX_X 64
/* events, alerts, dead letters, inquiries */
#define LW_NTOPICS 4

typedef struct topics_opts {
    const char *brokers;
    const char *config_file;
    const char *xs[LW_MAX_X];
    int nx;
    const char *names[LW_NTOPICS]; /* events, alerts, dead letters, inquiries */
    int partitions[LW_NTOPICS];
    bool partitions_set;      /* --partitions given: add-partitions needs it */
    int replication;          /* 0: min(3, brokers) */
    int min_insync;           /* 0: 2 when the replication factor is 3 or more */
    const char *retention_ms; /* events topic; NULL = infinite */
    int timeout_ms;
} topics_opts_t;

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: loanwire-topics create|add-partitions|list|describe|delete [options]\n"
            "\n"
            "  create    create the events, alerts, dead-letter and inquiries topics\n"
            "            (idempotent)\n"
            "  add-partitions  grow the events topic to --partitions N (never shrinks;\n"
            "            new events of some borrowers then land on other partitions)\n"
            "  list      list every topic on the cluster with its partition count\n"
            "  describe  partitions, leaders and main settings of Loanwire's topics\n"
            "  delete    delete Loanwire's topics (for tests; asks no question)\n"
            "\n"
            "Options:\n"
            "  -b, --brokers LIST          bootstrap servers (default $LOANWIRE_BOOTSTRAP or %s)\n"
            "      --partitions N          events topic partitions (default 6; the\n"
            "                              inquiries topic gets as many)\n"
            "      --alerts-partitions N   alerts topic partitions (default 3)\n"
            "      --dlq-partitions N      dead-letter topic partitions (default 1)\n"
            "      --replication R         replication factor (default min(3, brokers):\n"
            "                              3 on a cluster of 3 or more, 1 on one broker)\n"
            "      --min-insync N          min.insync.replicas of every topic (default 2\n"
            "                              when the replication factor is 3 or more, else 1)\n"
            "      --retention-ms MS       events and inquiries topics retention (default -1:\n"
            "                              keep forever)\n"
            "  -t, --topic NAME            events topic (default %s); --events-topic is\n"
            "                              the same option\n"
            "      --alerts-topic NAME     default %s\n"
            "      --dlq-topic NAME        default %s\n"
            "      --inquiries-topic NAME  default %s\n"
            "  -F, --config FILE           librdkafka properties file (TLS/SASL settings)\n"
            "  -X key=value                librdkafka property (repeatable)\n"
            "      --timeout-ms MS         admin request timeout, and how long create/delete\n"
            "                              wait for the metadata to show the topics ready/gone\n"
            "                              (default 30000)\n"
            "  --log-format FMT            text (default) or json (one object per line)\n"
            "  -h, --help                  this text\n"
            "  -V, --version               print the version and exit\n"
            "\n"
            "Exit status: 0 done, 1 a request failed, 2 usage or configuration error.\n",
            LW_DEFAULT_BOOTSTRAP, LW_TOPIC_EVENTS, LW_TOPIC_ALERTS, LW_TOPIC_DEAD_LETTERS,
            LW_TOPIC_INQUIRIES);
}

static int parse_int_opt(const char *name, const char *s, long lo, long hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (!*s || *end || v < lo || v > hi) {
        lw_error("--%s: expected an integer %ld..%ld, got \"%s\"", name, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static rd_kafka_t *admin_new(const topics_opts_t *o)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_t *rk;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, err, sizeof err) !=
            RD_KAFKA_CONF_OK ||
        (o->config_file && lw_conf_load_file(conf, o->config_file, err, sizeof err) != LW_OK)) {
        lw_error("%s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (int i = 0; i < o->nx; i++) {
        if (lw_conf_set_kv(conf, o->xs[i], err, sizeof err) != LW_OK) {
            lw_error("-X %s: %s", o->xs[i], err);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    lw_conf_route_logs(conf);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        lw_error("cannot create Kafka client: %s", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Waits for the admin result event of the expected type. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, rd_kafka_event_type_t type, int timeout_ms)
{
    int64_t deadline = lw_mono_ms() + timeout_ms + 5000;

    while (lw_mono_ms() < deadline) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 500);
        if (!ev)
            continue;
        if (rd_kafka_event_type(ev) == type)
            return ev;
        rd_kafka_event_destroy(ev);
    }
    return NULL;
}

static rd_kafka_AdminOptions_t *admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op,
                                              int timeout_ms)
{
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, op);
    char err[256];

    rd_kafka_AdminOptions_set_request_timeout(ao, timeout_ms, err, sizeof err);
    if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS || op == RD_KAFKA_ADMIN_OP_DELETETOPICS)
        rd_kafka_AdminOptions_set_operation_timeout(ao, timeout_ms, err, sizeof err);
    return ao;
}

/* Reports a failed request as a reachability problem when it looks like one. */
static void report_request_error(const topics_opts_t *o, const char *what, rd_kafka_resp_err_t e,
                                 const char *msg)
{
    lw_error("%s failed: %s", what, msg && *msg ? msg : rd_kafka_err2str(e));
    if (e == RD_KAFKA_RESP_ERR__TIMED_OUT || e == RD_KAFKA_RESP_ERR__TRANSPORT ||
        e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        lw_error("is Kafka running at %s? (start it with ./deploy/stack.sh up)", o->brokers);
}

/* The topic name in md, NULL when not listed. */
static const struct rd_kafka_metadata_topic *md_find(const struct rd_kafka_metadata *md,
                                                     const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, name) == 0 &&
            md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            return &md->topics[i];
    return NULL;
}

/* Why topic name is not yet as wanted, in why; "" when it is. */
static void topic_state(const struct rd_kafka_metadata *md, const char *name, int parts,
                        bool present, char *why, size_t why_size)
{
    const struct rd_kafka_metadata_topic *t = md_find(md, name);

    why[0] = '\0';
    if (!present) {
        if (t)
            snprintf(why, why_size, "%s still listed", name);
        return;
    }
    if (!t) {
        snprintf(why, why_size, "%s not listed", name);
        return;
    }
    if (t->err) {
        snprintf(why, why_size, "%s: %s", name, rd_kafka_err2str(t->err));
        return;
    }
    if (t->partition_cnt == 0 || (parts > 0 && t->partition_cnt != parts)) {
        snprintf(why, why_size, "%s lists %d partitions", name, t->partition_cnt);
        return;
    }
    for (int p = 0; p < t->partition_cnt; p++) {
        const struct rd_kafka_metadata_partition *mp = &t->partitions[p];
        if (mp->err || mp->leader < 0) {
            snprintf(why, why_size, "%s partition %" PRId32 " has no leader (%s)", name, mp->id,
                     rd_kafka_err2str(mp->err));
            return;
        }
    }
}

/*
 * CreateTopics/DeleteTopics answer once the controller accepted the change;
 * brokers learn it from the metadata log a little later, so a describe or a
 * produce right after may still miss a new topic (or see a deleted one).
 * These wait, bounded by --timeout-ms, until the metadata shows the change:
 * present = every named topic there with the wanted partition count (0: any)
 * and a leader for every partition; !present = none of them there.
 * Returns 0 when it does, 1 (after saying what is missing) when time is up.
 */
static int wait_metadata(rd_kafka_t *rk, const topics_opts_t *o, const bool wanted[LW_NTOPICS],
                         const int parts[LW_NTOPICS], bool present)
{
    int64_t deadline = lw_mono_ms() + o->timeout_ms;
    char why[512] = "";
    int left;

    if (!wanted[0] && !wanted[1] && !wanted[2])
        return 0;
    while ((left = (int)(deadline - lw_mono_ms())) > 0 && !lw_stop_requested()) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, left);

        if (e) {
            snprintf(why, sizeof why, "metadata request: %s", rd_kafka_err2str(e));
        } else {
            why[0] = '\0';
            for (int n = 0; n < LW_NTOPICS && !why[0]; n++)
                if (wanted[n])
                    topic_state(md, o->names[n], parts[n], present, why, sizeof why);
            rd_kafka_metadata_destroy(md);
            if (!why[0])
                return 0;
        }
        left = (int)(deadline - lw_mono_ms());
        if (left > 0)
            usleep((useconds_t)(left < 200 ? left : 200) * 1000);
    }
    lw_error("%s: %s", present ? "topics not ready" : "topics not gone",
             why[0] ? why : "interrupted");
    if (!lw_stop_requested())
        lw_error("the metadata did not show it within --timeout-ms %d", o->timeout_ms);
    return 1;
}

/* The replication factor and min.insync.replicas create uses: the options,
 * or what the cluster's broker count allows. -1 when the metadata failed. */
static int choose_replication(rd_kafka_t *rk, const topics_opts_t *o, int *rf, int *min_insync)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, o->timeout_ms);
    int brokers;

    if (e) {
        report_request_error(o, "metadata request", e, NULL);
        return -1;
    }
    brokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    *rf = o->replication ? o->replication : (brokers < 3 ? (brokers > 0 ? brokers : 1) : 3);
    *min_insync = o->min_insync ? o->min_insync : (*rf >= 3 ? 2 : 1);
    if (*min_insync > *rf) {
        lw_error("--min-insync %d is above the replication factor %d: no write could succeed",
                 *min_insync, *rf);
        return -1;
    }
    if (*rf > brokers)
        lw_warn("replication factor %d on %d broker(s): the broker will refuse it", *rf, brokers);
    printf("replication factor %d, min.insync.replicas=%d (%d broker%s%s)\n", *rf, *min_insync,
           brokers, brokers == 1 ? "" : "s", o->replication ? ", as asked" : "");
    return 0;
}

static int cmd_create(rd_kafka_t *rk, const topics_opts_t *o)
{
    rd_kafka_NewTopic_t *nt[LW_NTOPICS] = {NULL};
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao = admin_options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, o->timeout_ms);
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_topic_result_t **res;
    size_t cnt = 0;
    char err[512];
    bool wanted[LW_NTOPICS] = {false};
    int parts[LW_NTOPICS] = {0};
    int rc = 1, rf, min_insync;
    char mi[16];

    if (choose_replication(rk, o, &rf, &min_insync) != 0)
        goto out;
    snprintf(mi, sizeof mi, "%d", min_insync);
    for (int i = 0; i < LW_NTOPICS; i++) {
        nt[i] = rd_kafka_NewTopic_new(o->names[i], o->partitions[i], rf, err, sizeof err);
        if (!nt[i]) {
            lw_error("topic %s: %s", o->names[i], err);
            goto out;
        }
        rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "delete");
        rd_kafka_NewTopic_set_config(nt[i], "min.insync.replicas", mi);
        if (i == 0 || i == 3) /* events and inquiries: the log is the record */
            rd_kafka_NewTopic_set_config(nt[i], "retention.ms",
                                         o->retention_ms ? o->retention_ms : "-1");
    }
    rd_kafka_CreateTopics(rk, nt, LW_NTOPICS, ao, q);
    ev = admin_wait(q, RD_KAFKA_EVENT_CREATETOPICS_RESULT, o->timeout_ms);
    if (!ev) {
        report_request_error(o, "create topics", RD_KAFKA_RESP_ERR__TIMED_OUT, NULL);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        report_request_error(o, "create topics", rd_kafka_event_error(ev),
                             rd_kafka_event_error_string(ev));
        goto out;
    }
    res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    rc = 0;
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        const char *name = rd_kafka_topic_result_name(res[i]);
        int j = 0;
        while (j < LW_NTOPICS - 1 && strcmp(name, o->names[j]) != 0)
            j++;
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            printf("created %s (%d partitions)\n", name, o->partitions[j]);
            wanted[j] = true;
            parts[j] = o->partitions[j];
        } else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            printf("exists %s\n", name);
            wanted[j] = true; /* perhaps created a moment ago: ready too, any count */
        } else {
            const char *m = rd_kafka_topic_result_error_string(res[i]);
            lw_error("create %s: %s", name, m && *m ? m : rd_kafka_err2str(e));
            rc = 1;
        }
    }
    fflush(stdout);
    if (wait_metadata(rk, o, wanted, parts, true) != 0)
        rc = 1;
out:
    for (int i = 0; i < LW_NTOPICS; i++)
        rd_kafka_NewTopic_destroy(nt[i]);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    return rc;
}

static int get_metadata(rd_kafka_t *rk, const topics_opts_t *o, const struct rd_kafka_metadata **md)
{
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, md, o->timeout_ms);

    if (e) {
        report_request_error(o, "metadata request", e, NULL);
        return -1;
    }
    return 0;
}

/* Grows topic k (events or inquiries) to o->partitions[0]; "already N" is not an
 * error, nor an absent inquiries topic when absent_ok. */
static int grow_topic(rd_kafka_t *rk, const topics_opts_t *o, int k, bool absent_ok)
{
    rd_kafka_NewPartitions_t *np;
    rd_kafka_queue_t *q;
    rd_kafka_AdminOptions_t *ao;
    rd_kafka_event_t *ev;
    const struct rd_kafka_metadata *md;
    const struct rd_kafka_metadata_topic *t;
    bool wanted[LW_NTOPICS] = {false};
    int parts[LW_NTOPICS] = {0};
    int have, rc = 1;
    char err[512];

    wanted[k] = true;
    parts[k] = o->partitions[0];
    if (get_metadata(rk, o, &md))
        return 1;
    t = md_find(md, o->names[k]);
    have = t && !t->err ? t->partition_cnt : -1;
    rd_kafka_metadata_destroy(md);
    if (have < 0 && absent_ok) {
        printf("absent %s (not grown)\n", o->names[k]);
        return 0;
    }
    if (have < 0) {
        lw_error("%s: absent (create it first)", o->names[k]);
        return 1;
    }
    if (have == o->partitions[0]) {
        printf("unchanged %s (%d partitions)\n", o->names[k], have);
        return 0;
    }
    if (have > o->partitions[0]) {
        lw_error("%s has %d partitions: Kafka cannot shrink a topic to %d", o->names[k], have,
                 o->partitions[0]);
        return 1;
    }
    np = rd_kafka_NewPartitions_new(o->names[k], (size_t)o->partitions[0], err, sizeof err);
    if (!np) {
        lw_error("topic %s: %s", o->names[k], err);
        return 2;
    }
    q = rd_kafka_queue_new(rk);
    ao = admin_options(rk, RD_KAFKA_ADMIN_OP_CREATEPARTITIONS, o->timeout_ms);
    rd_kafka_AdminOptions_set_operation_timeout(ao, o->timeout_ms, err, sizeof err);
    rd_kafka_CreatePartitions(rk, &np, 1, ao, q);
    ev = admin_wait(q, RD_KAFKA_EVENT_CREATEPARTITIONS_RESULT, o->timeout_ms);
    if (!ev) {
        report_request_error(o, "add partitions", RD_KAFKA_RESP_ERR__TIMED_OUT, NULL);
    } else if (rd_kafka_event_error(ev)) {
        report_request_error(o, "add partitions", rd_kafka_event_error(ev),
                             rd_kafka_event_error_string(ev));
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **res = rd_kafka_CreatePartitions_result_topics(
            rd_kafka_event_CreatePartitions_result(ev), &cnt);
        rc = cnt == 1 ? 0 : 1;
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            const char *m = rd_kafka_topic_result_error_string(res[i]);
            if (e) {
                lw_error("add partitions to %s: %s", rd_kafka_topic_result_name(res[i]),
                         m && *m ? m : rd_kafka_err2str(e));
                rc = 1;
            }
        }
        if (rc == 0) {
            printf("grew %s from %d to %d partitions\n", o->names[k], have, o->partitions[0]);
            fflush(stdout);
            rc = wait_metadata(rk, o, wanted, parts, true);
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_NewPartitions_destroy(np);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    return rc;
}

/* Grows the events topic, then the inquiries topic beside it (a borrower's
 * inquiries must stay on the partition number of its events: the consumer
 * refuses two topics whose counts differ). */
static int cmd_add_partitions(rd_kafka_t *rk, const topics_opts_t *o)
{
    int rc = grow_topic(rk, o, 0, false);
    /* beside another events topic, loanwire.inquiries is not its sibling
     * unless named (loanwire-exposure pairs them the same way) */
    if (rc || (strcmp(o->names[0], LW_TOPIC_EVENTS) && !strcmp(o->names[3], LW_TOPIC_INQUIRIES)))
        return rc;
    return grow_topic(rk, o, 3, true);
}

static int cmd_delete(rd_kafka_t *rk, const topics_opts_t *o)
{
    rd_kafka_DeleteTopic_t *dt[LW_NTOPICS];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao = admin_options(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS, o->timeout_ms);
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **res;
    size_t cnt = 0;
    bool wanted[LW_NTOPICS] = {false};
    const int parts[LW_NTOPICS] = {0, 0, 0};
    int rc = 1;

    for (int i = 0; i < LW_NTOPICS; i++)
        dt[i] = rd_kafka_DeleteTopic_new(o->names[i]);
    rd_kafka_DeleteTopics(rk, dt, LW_NTOPICS, ao, q);
    ev = admin_wait(q, RD_KAFKA_EVENT_DELETETOPICS_RESULT, o->timeout_ms);
    if (!ev) {
        report_request_error(o, "delete topics", RD_KAFKA_RESP_ERR__TIMED_OUT, NULL);
    } else if (rd_kafka_event_error(ev)) {
        report_request_error(o, "delete topics", rd_kafka_event_error(ev),
                             rd_kafka_event_error_string(ev));
    } else {
        res = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
        rc = 0;
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            const char *name = rd_kafka_topic_result_name(res[i]);
            int j = 0;
            while (j < LW_NTOPICS - 1 && strcmp(name, o->names[j]) != 0)
                j++;
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
                printf("deleted %s\n", name);
                wanted[j] = true;
            } else if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                printf("absent %s\n", name);
            } else {
                lw_error("delete %s: %s", name, rd_kafka_err2str(e));
                rc = 1;
            }
        }
        fflush(stdout);
        if (wait_metadata(rk, o, wanted, parts, false) != 0)
            rc = 1;
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    for (int i = 0; i < LW_NTOPICS; i++)
        rd_kafka_DeleteTopic_destroy(dt[i]);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    return rc;
}

static int cmd_list(rd_kafka_t *rk, const topics_opts_t *o)
{
    const struct rd_kafka_metadata *md;

    if (get_metadata(rk, o, &md))
        return 1;
    for (int i = 0; i < md->topic_cnt; i++)
        if (md->topics[i].topic[0] != '_') /* internal topics */
            printf("%s\t%d partitions\n", md->topics[i].topic, md->topics[i].partition_cnt);
    rd_kafka_metadata_destroy(md);
    return 0;
}

/* Prints the settings that matter for Loanwire's topics. */
static void print_configs(rd_kafka_t *rk, const topics_opts_t *o)
{
    rd_kafka_ConfigResource_t *cr[LW_NTOPICS];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao =
        admin_options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, o->timeout_ms);
    rd_kafka_event_t *ev;

    for (int i = 0; i < LW_NTOPICS; i++)
        cr[i] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, o->names[i]);
    rd_kafka_DescribeConfigs(rk, cr, LW_NTOPICS, ao, q);
    ev = admin_wait(q, RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT, o->timeout_ms);
    if (ev && !rd_kafka_event_error(ev)) {
        size_t rcnt = 0;
        const rd_kafka_ConfigResource_t **rs = rd_kafka_DescribeConfigs_result_resources(
            rd_kafka_event_DescribeConfigs_result(ev), &rcnt);
        for (size_t i = 0; i < rcnt; i++) {
            size_t ecnt = 0;
            const rd_kafka_ConfigEntry_t **ents;
            if (rd_kafka_ConfigResource_error(rs[i]))
                continue;
            ents = rd_kafka_ConfigResource_configs(rs[i], &ecnt);
            for (size_t j = 0; j < ecnt; j++) {
                const char *n = rd_kafka_ConfigEntry_name(ents[j]);
                const char *v = rd_kafka_ConfigEntry_value(ents[j]);
                if (strcmp(n, "retention.ms") == 0 || strcmp(n, "cleanup.policy") == 0 ||
                    strcmp(n, "min.insync.replicas") == 0)
                    printf("  %s config %s=%s\n", rd_kafka_ConfigResource_name(rs[i]), n,
                           v ? v : "(null)");
            }
        }
    } else {
        lw_warn("could not read topic configuration");
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    for (int i = 0; i < LW_NTOPICS; i++)
        rd_kafka_ConfigResource_destroy(cr[i]);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
}

static int cmd_describe(rd_kafka_t *rk, const topics_opts_t *o)
{
    const struct rd_kafka_metadata *md;
    int rc = 0;

    if (get_metadata(rk, o, &md))
        return 1;
    for (int n = 0; n < LW_NTOPICS; n++) {
        const struct rd_kafka_metadata_topic *t = NULL;
        for (int i = 0; i < md->topic_cnt; i++)
            if (strcmp(md->topics[i].topic, o->names[n]) == 0)
                t = &md->topics[i];
        if (!t || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            printf("%s: absent\n", o->names[n]);
            rc = 1;
            continue;
        }
        printf("%s: %d partitions\n", t->topic, t->partition_cnt);
        for (int p = 0; p < t->partition_cnt; p++) {
            const struct rd_kafka_metadata_partition *mp = &t->partitions[p];
            printf("  partition %" PRId32 " leader %" PRId32 " replicas %d isr %d%s%s\n", mp->id,
                   mp->leader, mp->replica_cnt, mp->isr_cnt, mp->err ? " error " : "",
                   mp->err ? rd_kafka_err2str(mp->err) : "");
        }
    }
    rd_kafka_metadata_destroy(md);
    print_configs(rk, o);
    return rc;
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    enum {
        O_PARTS = 256,
        O_APARTS,
        O_DPARTS,
        O_REPL,
        O_RET,
        O_ET,
        O_AT,
        O_DT,
        O_IT,
        O_TMO,
        O_MINISR
    };
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"partitions", required_argument, NULL, O_PARTS},
                                         {"alerts-partitions", required_argument, NULL, O_APARTS},
                                         {"dlq-partitions", required_argument, NULL, O_DPARTS},
                                         {"replication", required_argument, NULL, O_REPL},
                                         {"min-insync", required_argument, NULL, O_MINISR},
                                         {"retention-ms", required_argument, NULL, O_RET},
                                         {"events-topic", required_argument, NULL, O_ET},
                                         {"topic", required_argument, NULL, 't'},
                                         {"alerts-topic", required_argument, NULL, O_AT},
                                         {"dlq-topic", required_argument, NULL, O_DT},
                                         {"inquiries-topic", required_argument, NULL, O_IT},
                                         {"config", required_argument, NULL, 'F'},
                                         {"timeout-ms", required_argument, NULL, O_TMO},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    topics_opts_t o = {
        .brokers = lw_conf_default_bootstrap(),
        .names = {LW_TOPIC_EVENTS, LW_TOPIC_ALERTS, LW_TOPIC_DEAD_LETTERS, LW_TOPIC_INQUIRIES},
        .partitions = {6, 3, 1, 0}, /* inquiries: as many as events */
        .timeout_ms = 30000};
    const char *cmd;
    rd_kafka_t *rk;
    int c, rc;

    lw_log_init(argv[0], LW_LOG_INFO);
    while ((c = getopt_long(argc, argv, "b:t:F:X:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            o.brokers = optarg;
            break;
        case 'F':
            o.config_file = optarg;
            break;
        case 'X':
            if (o.nx == LW_MAX_X) {
                lw_error("too many -X options");
                return 2;
            }
            o.xs[o.nx++] = optarg;
            break;
        case O_PARTS:
        case O_APARTS:
        case O_DPARTS:
            if (parse_int_opt(opts[c - O_PARTS + 1].name, optarg, 1, 100000,
                              &o.partitions[c - O_PARTS]))
                return 2;
            o.partitions_set |= c == O_PARTS;
            break;
        case O_REPL:
            if (parse_int_opt("replication", optarg, 1, 32767, &o.replication))
                return 2;
            break;
        case O_MINISR:
            if (parse_int_opt("min-insync", optarg, 1, 32767, &o.min_insync))
                return 2;
            break;
        case O_RET:
            if (strcmp(optarg, "-1") != 0) {
                char *end;
                long long v = strtoll(optarg, &end, 10);
                if (!*optarg || *end || v < 1) {
                    lw_error("--retention-ms: expected -1 or a positive integer, got \"%s\"",
                             optarg);
                    return 2;
                }
            }
            o.retention_ms = optarg;
            break;
        case 't':
        case O_ET:
        case O_AT:
        case O_DT:
        case O_IT:
            if (!*optarg) {
                lw_error("empty topic name");
                return 2;
            }
            o.names[c == 't' ? 0 : c - O_ET] = optarg;
            break;
        case O_TMO:
            if (parse_int_opt("timeout-ms", optarg, 100, 3600000, &o.timeout_ms))
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("loanwire-topics %s\n", LW_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    o.partitions[3] = o.partitions[0]; /* a borrower's inquiries beside its events */
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    cmd = argv[optind];
    if (strcmp(cmd, "create") && strcmp(cmd, "add-partitions") && strcmp(cmd, "list") &&
        strcmp(cmd, "describe") && strcmp(cmd, "delete")) {
        lw_error("unknown command \"%s\" (create, add-partitions, list, describe or delete)", cmd);
        return 2;
    }
    if (strcmp(cmd, "add-partitions") == 0 && !o.partitions_set) {
        lw_error("add-partitions: give the new partition count with --partitions N");
        return 2;
    }
    lw_signals_install();
    rk = admin_new(&o);
    if (!rk)
        return 2;
    if (strcmp(cmd, "create") == 0)
        rc = cmd_create(rk, &o);
    else if (strcmp(cmd, "add-partitions") == 0)
        rc = cmd_add_partitions(rk, &o);
    else if (strcmp(cmd, "list") == 0)
        rc = cmd_list(rk, &o);
    else if (strcmp(cmd, "describe") == 0)
        rc = cmd_describe(rk, &o);
    else
        rc = cmd_delete(rk, &o);
    rd_kafka_destroy(rk);
    return rc;
}
