/*
 * exposure_main.c - loanwire-exposure: options in, lw_exposure_run() out.
 *
 * Under systemd (Type=notify, deploy/systemd/loanwire-exposure@.service) the
 * service is ready once this consumer can work: main() waits until Redis
 * answers PING and the broker returns the events topic's metadata, with the
 * same URL, brokers and librdkafka properties the consumer then uses, sends
 * READY=1 and starts lw_exposure_run(). The check lives here because the
 * consumer's start is one call (lw_exposure_run() connects and runs); when
 * the library offers a separate connect step, READY=1 belongs after it.
 * Without $NOTIFY_SOCKET nothing is checked or sent.
 */
#include "loanwire/conf.h"
#include "loanwire/evict.h"
#include "loanwire/exposure.h"
#include "loanwire/validate.h"
#include "loanwire/log.h"
#include "loanwire/redis.h"
#include "loanwire/version.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

enum {
    LW_EXIT_OK = 0,    /* stopped cleanly: signal, --until-caught-up, --exit-on-idle */
    LW_EXIT_FAIL = 1,  /* could not start (Redis, Kafka, rules) or failed hard */
    LW_EXIT_USAGE = 2, /* bad option or value */
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: loanwire-exposure [options]\n"
        "Keeps every borrower's exposure in Redis from the loan-event topic, evaluates\n"
        "the over-indebtedness rules and publishes alerts. Run several in one group to\n"
        "scale out.\n\n"
        "  -b, --brokers LIST   bootstrap servers (default $LOANWIRE_BOOTSTRAP or %s)\n"
        "  -g, --group ID       consumer group (default loanwire-exposure)\n"
        "  -t, --topic NAME     loan events (default %s)\n"
        "  --alerts-topic NAME  alerts out (default %s)\n"
        "  --dlq-topic NAME     dead letters out (default %s)\n"
        "  --inquiries-topic NAME  recorded credit inquiries in (loanwire-query writes\n"
        "                       them; default %s with the default events topic,\n"
        "                       none with another; \"\" none): partition p is read by\n"
        "                       the owner of the events topic's partition p (as many\n"
        "                       partitions as the events topic, or it refuses to start)\n"
        "  --redis URL          redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (default\n"
        "                       $LOANWIRE_REDIS or %s); percent-encoded\n"
        "                       user and password, never logged\n"
        "  --rules FILE         rules file (default: the built-in pack, see\n"
        "                       consumers/exposure/rules.default)\n"
        "  --allow-eviction     start even if Redis's maxmemory-policy may evict keys\n"
        "                       (refused by default: it would drop borrower state)\n"
        "  --metrics-listen HOST:PORT  serve /metrics (Prometheus), /healthz, /readyz\n"
        "                       (default: off)\n"
        "  --log-format FMT     text (default) or json (one object per line)\n"
        "  -F, --config FILE    librdkafka properties file (key=value lines)\n"
        "  -X key=value         librdkafka property (repeatable; after --config)\n"
        "  --from-beginning     start every partition at its first offset (rebuild)\n"
        "  --until-caught-up    stop once lag is 0 on every assigned partition\n"
        "  --exit-on-idle SECS  stop after SECS without a message\n"
        "  --wait-replicas N    a batch counts as written (and its offsets may move) only\n"
        "                       once WAIT says N replicas have it, on every master it\n"
        "                       touched (default 0: the master's word)\n"
        "  --wait-timeout MS    WAIT's timeout; short of replicas, the batch is redone\n"
        "                       (default 1000)\n"
        "  --stall-timeout SECS a partition fenced but still assigned this long: stop\n"
        "                       with an error instead of holding it (default 30; 0 never)\n"
        "  --max-loans N        loans one borrower may have (default %d); an event\n"
        "                       opening one more goes to the dead letters, with why\n"
        "  --max-window-entries N  new loans + applications one borrower may have in\n"
        "                       the kept window (30 days, or the longest rule window\n"
        "                       up to 90d; default %d); beyond: dead letters\n"
        "  --max-inquiries N    recorded inquiries one borrower's state keeps (90 days;\n"
        "                       default %d); beyond: dead letters\n"
        "  --retain-ended DUR   a closed loan leaves its borrower's state DUR after it\n"
        "                       ended, by event time (default 90d; 5y, 2160h, off);\n"
        "                       an event for a loan not held, dated more than DUR\n"
        "                       behind the borrower's latest, goes to the dead letters\n"
        "  --retain-negative DUR  a written-off loan, or one closed while past due,\n"
        "                       leaves DUR after it ended (default 5y, or --retain-ended\n"
        "                       if longer; never shorter than it)\n"
        "  --max-future SECS    an event dated more than SECS ahead of this host's clock\n"
        "                       goes to the dead letters (default %lld; 0: no bound)\n"
        "  --batch N            events per batch: one read and one write round trip\n"
        "                       to Redis (default 2000; 100000 on a Redis Cluster,\n"
        "                       where a bigger batch shares more script calls; at\n"
        "                       most 1000000; ~4 KB of memory per event, two batches)\n"
        "  --no-strict-fencing  no WATCHed partition epoch keys and MULTI/EXEC: a write\n"
        "                       script checks each borrower's fence stamp instead\n"
        "                       (needed on Redis Cluster; default: strict)\n"
        "  --no-alert-stream    do not XADD alerts to the Redis stream %s\n"
        "  --stream-maxlen N    cap of that stream (MAXLEN ~ N, default 100000)\n"
        "  --status SECS        status line period on stderr (default 5, 0 = off)\n"
        "  --consumer-id ID     metrics key lw:metrics:<ID> (default host:pid)\n"
        "  --chunk N            borrowers per MSET or write-script call (default %d;\n"
        "                       1 on one Redis without strict fencing and alert\n"
        "                       stream; on a Redis Cluster a call holds one hash\n"
        "                       slot's borrowers, at most N)\n"
        "  --latency-out FILE   at exit write event-to-state latency (Redis ack minus\n"
        "                       the lw-sent-us header) of applied events as JSON:\n"
        "                       {\"state\":{count,p50_us,p99_us,p999_us,max_us},\"alert\":{..}}\n"
        "  --print-script       print the Redis write script and exit\n"
        "  -v, --verbose        debug logging\n"
        "  -h, --help           this text\n"
        "  -V, --version        print the version and exit\n"
        "\n"
        "Under systemd (Type=notify) READY=1 is sent once Redis answers and the broker\n"
        "knows the topic, just before the consumer joins its group.\n"
        "\n"
        "Exit status: 0 stopped cleanly (SIGINT/SIGTERM, --until-caught-up,\n"
        "--exit-on-idle); 1 could not start (Redis, Kafka, rules file), failed hard,\n"
        "or was stopped during an outage with a batch left uncommitted; 2 usage error.\n",
        LW_DEFAULT_BOOTSTRAP, LW_TOPIC_EVENTS, LW_TOPIC_ALERTS, LW_TOPIC_DEAD_LETTERS,
        LW_TOPIC_INQUIRIES, LW_DEFAULT_REDIS, LW_MAX_LOANS_DEFAULT, LW_MAX_WINDOW_DEFAULT,
        LW_MAX_INQUIRIES_DEFAULT, (long long)(LW_MAX_FUTURE_MS_DEFAULT / 1000),
        LW_REDIS_ALERT_STREAM, LW_CHUNK_DEFAULT);
}

/* What a readiness check found: go on, wait and retry, or give up (a
 * configuration error that retrying cannot mend). */
typedef enum { LW_UP, LW_WAIT, LW_BAD_CONF } lw_check_t;

/* Redis answers PING at the consumer's URL (as the consumer will connect). */
static lw_check_t redis_answers(const char *url, char *errstr, size_t errstr_size)
{
    lw_redis_url_t u;
    redisContext *rc;
    redisReply *r;
    bool ok;

    if (lw_redis_url_parse(url, &u, errstr, errstr_size) != LW_OK)
        return LW_BAD_CONF;
    if (!(rc = lw_redis_connect(&u, 2000, NULL, errstr, errstr_size)))
        return LW_WAIT;
    r = redisCommand(rc, "PING");
    ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(errstr, errstr_size, "Redis %s: no answer to PING", url);
    freeReplyObject(r);
    redisFree(rc);
    return ok ? LW_UP : LW_WAIT;
}

/* The broker returns the topic's metadata, through the consumer's settings. */
static lw_check_t kafka_knows_topic(const lw_exposure_conf_t *c, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt;
    rd_kafka_resp_err_t e;
    rd_kafka_t *rk;
    lw_check_t ret = LW_WAIT;

    if (rd_kafka_conf_set(kc, "bootstrap.servers", c->brokers, errstr, errstr_size) ||
        (c->config_file && lw_conf_load_file(kc, c->config_file, errstr, errstr_size) != LW_OK)) {
        rd_kafka_conf_destroy(kc);
        return LW_BAD_CONF;
    }
    for (size_t i = 0; i < c->n_kafka_kv; i++) {
        if (lw_conf_set_kv(kc, c->kafka_kv[i], errstr, errstr_size) != LW_OK) {
            rd_kafka_conf_destroy(kc);
            return LW_BAD_CONF;
        }
    }
    /* a producer's metadata request may create the topic on a broker with
     * auto.create.topics.enable (Kafka's default), with the broker's default
     * partition count: asking must not do that */
    if (rd_kafka_conf_set(kc, "allow.auto.create.topics", "false", errstr, errstr_size)) {
        rd_kafka_conf_destroy(kc);
        return LW_BAD_CONF;
    }
    lw_conf_route_logs(kc);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, errstr_size)))
        return LW_BAD_CONF; /* rd_kafka_new() freed kc */
    rkt = rd_kafka_topic_new(rk, c->topic, NULL);
    e = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
    if (e)
        snprintf(errstr, errstr_size, "Kafka %s: %s", c->brokers, rd_kafka_err2str(e));
    else if (md->topic_cnt != 1 || md->topics[0].err)
        snprintf(
            errstr, errstr_size, "Kafka %s: topic %s: %s", c->brokers, c->topic,
            rd_kafka_err2str(md->topic_cnt ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
    else
        ret = LW_UP;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return ret;
}

/*
 * Waits (1 s apart, until stopped) for Redis and the broker, then tells
 * systemd the service is ready. LW_UP when ready (or not under systemd),
 * LW_WAIT when a signal came first, LW_BAD_CONF with errstr set.
 */
static lw_check_t notify_ready(const lw_exposure_conf_t *c, char *errstr, size_t errstr_size)
{
    struct timespec second = {1, 0};
    lw_check_t r;

    if (!getenv("NOTIFY_SOCKET"))
        return LW_UP;
    while (!lw_stop_requested()) {
        r = redis_answers(c->redis_url, errstr, errstr_size);
        if (r == LW_UP)
            r = kafka_knows_topic(c, errstr, errstr_size);
        if (r == LW_UP) {
            sd_notifyf(0, "READY=1\nSTATUS=consuming %s in group %s", c->topic, c->group);
            return LW_UP;
        }
        if (r == LW_BAD_CONF)
            return LW_BAD_CONF;
        sd_notifyf(0, "STATUS=waiting: %s", errstr);
        lw_warn("not ready: %s (retry in 1 s)", errstr);
        nanosleep(&second, NULL);
    }
    return LW_WAIT;
}

static bool parse_pos(const char *s, long long max, long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 0 || v > max)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    enum {
        O_ALERTS = 256,
        O_DLQ,
        O_REDIS,
        O_RULES,
        O_BEGIN,
        O_CAUGHT,
        O_IDLE,
        O_STALL,
        O_WAITN,
        O_WAITMS,
        O_BATCH,
        O_NOSTRICT,
        O_NOSTREAM,
        O_MAXLEN,
        O_STATUS,
        O_ID,
        O_PRINT,
        O_CHUNK,
        O_LATENCY,
        O_MAXLOANS,
        O_MAXWIN,
        O_FUTURE,
        O_RETEND,
        O_RETNEG,
        O_INQTOPIC,
        O_MAXINQ,
        O_EVICT,
        O_LISTEN
    };
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"group", required_argument, NULL, 'g'},
        {"topic", required_argument, NULL, 't'},
        {"alerts-topic", required_argument, NULL, O_ALERTS},
        {"dlq-topic", required_argument, NULL, O_DLQ},
        {"redis", required_argument, NULL, O_REDIS},
        {"rules", required_argument, NULL, O_RULES},
        {"config", required_argument, NULL, 'F'},
        {"from-beginning", no_argument, NULL, O_BEGIN},
        {"until-caught-up", no_argument, NULL, O_CAUGHT},
        {"exit-on-idle", required_argument, NULL, O_IDLE},
        {"stall-timeout", required_argument, NULL, O_STALL},
        {"wait-replicas", required_argument, NULL, O_WAITN},
        {"wait-timeout", required_argument, NULL, O_WAITMS},
        {"batch", required_argument, NULL, O_BATCH},
        {"no-strict-fencing", no_argument, NULL, O_NOSTRICT},
        {"no-alert-stream", no_argument, NULL, O_NOSTREAM},
        {"stream-maxlen", required_argument, NULL, O_MAXLEN},
        {"status", required_argument, NULL, O_STATUS},
        {"consumer-id", required_argument, NULL, O_ID},
        {"print-script", no_argument, NULL, O_PRINT},
        {"chunk", required_argument, NULL, O_CHUNK},
        {"latency-out", required_argument, NULL, O_LATENCY},
        {"max-loans", required_argument, NULL, O_MAXLOANS},
        {"max-window-entries", required_argument, NULL, O_MAXWIN},
        {"max-future", required_argument, NULL, O_FUTURE},
        {"retain-ended", required_argument, NULL, O_RETEND},
        {"retain-negative", required_argument, NULL, O_RETNEG},
        {"inquiries-topic", required_argument, NULL, O_INQTOPIC},
        {"max-inquiries", required_argument, NULL, O_MAXINQ},
        {"allow-eviction", no_argument, NULL, O_EVICT},
        {"metrics-listen", required_argument, NULL, O_LISTEN},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    lw_exposure_conf_t c;
    char errstr[1024];
    const char **kv = calloc((size_t)argc, sizeof *kv);
    bool print = false;
    lw_log_level_t level = LW_LOG_INFO;
    long long v;
    int o;

    lw_exposure_conf_init(&c);
    c.kafka_kv = kv;
    while ((o = getopt_long(argc, argv, "b:g:t:F:X:vhV", opts, NULL)) != -1) {
        switch (o) {
        case 'b':
            c.brokers = optarg;
            break;
        case 'g':
            c.group = optarg;
            break;
        case 't':
            c.topic = optarg;
            break;
        case O_ALERTS:
            c.alerts_topic = optarg;
            break;
        case O_DLQ:
            c.dlq_topic = optarg;
            break;
        case O_INQTOPIC:
            c.inquiries_topic = optarg;
            break;
        case O_REDIS:
            c.redis_url = optarg;
            break;
        case O_RULES:
            c.rules_file = optarg;
            break;
        case 'F':
            c.config_file = optarg;
            break;
        case O_BEGIN:
            c.from_beginning = true;
            break;
        case O_CAUGHT:
            c.until_caught_up = true;
            break;
        case O_NOSTRICT:
            c.script.strict_fencing = false;
            break;
        case O_NOSTREAM:
            c.script.alert_stream = false;
            break;
        case O_ID:
            c.consumer_id = optarg;
            break;
        case O_PRINT:
            print = true;
            break;
        case O_EVICT:
            c.allow_eviction = true;
            break;
        case O_LISTEN:
            c.metrics_listen = optarg;
            break;
        case O_LATENCY:
            c.latency_out = optarg;
            break;
        case O_CHUNK:
            if (!parse_pos(optarg, 4096, &v) || v == 0) {
                fprintf(stderr, "loanwire-exposure: bad number '%s' for --chunk (1..4096)\n",
                        optarg);
                free(kv);
                return LW_EXIT_USAGE;
            }
            c.script.chunk_max = (size_t)v;
            break;
        case 'X':
            kv[c.n_kafka_kv++] = optarg;
            break;
        case 'v':
            level = LW_LOG_DEBUG;
            break;
        case 'h':
            usage(stdout);
            free(kv);
            return LW_EXIT_OK;
        case 'V':
            printf("loanwire-exposure %s\n", LW_VERSION);
            free(kv);
            return LW_EXIT_OK;
        case O_IDLE:
        case O_STALL:
        case O_WAITN:
        case O_WAITMS:
        case O_BATCH:
        case O_MAXLEN:
        case O_STATUS:
        case O_MAXLOANS:
        case O_MAXWIN:
        case O_MAXINQ:
        case O_FUTURE: {
            long long hi = o == O_BATCH ? LW_BATCH_MAX : 1000000000;
            int lo =
                o == O_BATCH || o == O_MAXLEN || o == O_MAXLOANS || o == O_MAXWIN || o == O_MAXINQ;
            if (!parse_pos(optarg, hi, &v) || v < lo) {
                fprintf(stderr, "loanwire-exposure: bad number '%s' for --%s (%d..%lld)\n", optarg,
                        o == O_IDLE       ? "exit-on-idle"
                        : o == O_STALL    ? "stall-timeout"
                        : o == O_WAITN    ? "wait-replicas"
                        : o == O_WAITMS   ? "wait-timeout"
                        : o == O_BATCH    ? "batch"
                        : o == O_MAXLEN   ? "stream-maxlen"
                        : o == O_MAXLOANS ? "max-loans"
                        : o == O_MAXWIN   ? "max-window-entries"
                        : o == O_MAXINQ   ? "max-inquiries"
                        : o == O_FUTURE   ? "max-future"
                                          : "status",
                        lo, hi);
                free(kv);
                return LW_EXIT_USAGE;
            }
            if (o == O_IDLE)
                c.exit_on_idle_s = (int)v;
            else if (o == O_STALL)
                c.stall_s = (int)v;
            else if (o == O_WAITN)
                c.script.wait_replicas = (int)v;
            else if (o == O_WAITMS)
                c.script.wait_timeout_ms = (int)v;
            else if (o == O_BATCH)
                c.batch_max = (size_t)v;
            else if (o == O_MAXLEN)
                c.script.stream_maxlen = v;
            else if (o == O_MAXLOANS)
                c.max_loans = (size_t)v;
            else if (o == O_MAXWIN)
                c.max_window = (size_t)v;
            else if (o == O_MAXINQ)
                c.max_inquiries = (size_t)v;
            else if (o == O_FUTURE)
                lw_validate_set_max_future_ms(v * 1000);
            else
                c.status_every_s = (int)v;
            break;
        }
        case O_RETEND:
        case O_RETNEG:
            if (!lw_retention_parse(optarg,
                                    o == O_RETEND ? &c.retain_ended_ms : &c.retain_negative_ms)) {
                fprintf(stderr,
                        "loanwire-exposure: bad duration '%s' for --%s (e.g. 90d, 5y, 2160h, "
                        "off)\n",
                        optarg, o == O_RETEND ? "retain-ended" : "retain-negative");
                free(kv);
                return LW_EXIT_USAGE;
            }
            break;
        default:
            usage(stderr);
            free(kv);
            return LW_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loanwire-exposure: unexpected argument '%s'\n", argv[optind]);
        free(kv);
        return LW_EXIT_USAGE;
    }
    /* the same check lw_rules_set_retention() makes, as a usage error */
    if (c.retain_negative_ms &&
        c.retain_negative_ms <
            (c.retain_ended_ms ? c.retain_ended_ms : LW_RETAIN_ENDED_DEFAULT_MS)) {
        fprintf(stderr, "loanwire-exposure: --retain-negative is shorter than --retain-ended; "
                        "negative records must stay at least as long as settled ones\n");
        free(kv);
        return LW_EXIT_USAGE;
    }
    lw_log_init("loanwire-exposure", level);

    if (print) {
        char *s = lw_script_build(&c.script);
        fputs(s ? s : "", stdout);
        free(s);
        free(kv);
        return s ? 0 : 1;
    }

    lw_signals_install();
    switch (notify_ready(&c, errstr, sizeof errstr)) {
    case LW_UP:
        break;
    case LW_WAIT: /* stopped while waiting */
        free(kv);
        return LW_EXIT_OK;
    case LW_BAD_CONF:
        lw_error("%s", errstr);
        free(kv);
        return LW_EXIT_FAIL;
    }
    if (lw_redis_eviction_check(c.redis_url, c.allow_eviction, errstr, sizeof errstr) != LW_OK) {
        lw_error("%s", errstr);
        free(kv);
        return LW_EXIT_FAIL;
    }
    lw_err_t err = lw_exposure_run(&c, errstr, sizeof errstr);
    free(kv);
    sd_notify(0, "STOPPING=1");
    if (err) {
        lw_error("%s", errstr);
        return LW_EXIT_FAIL;
    }
    return LW_EXIT_OK;
}
