/*
 * exposure_main.c - loanwire-exposure: options in, lw_exposure_run() out.
 */
#include "loanwire/conf.h"
#include "loanwire/exposure.h"
#include "loanwire/log.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: loanwire-exposure [options]\n"
        "Keeps every borrower's exposure in Redis from the loan-event topic, evaluates\n"
        "the over-indebtedness rules and publishes alerts. Run several in one group to\n"
        "scale out.\n\n"
        "  --brokers LIST       bootstrap servers (default $LOANWIRE_BOOTSTRAP or %s)\n"
        "  --group ID           consumer group (default loanwire-exposure)\n"
        "  --topic NAME         loan events (default %s)\n"
        "  --alerts-topic NAME  alerts out (default %s)\n"
        "  --dlq-topic NAME     dead letters out (default %s)\n"
        "  --redis URL          redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (default\n"
        "                       $LOANWIRE_REDIS or %s); percent-encoded\n"
        "                       user and password, never logged\n"
        "  --rules FILE         rules file (default: the built-in pack, see\n"
        "                       consumers/exposure/rules.default)\n"
        "  --config FILE        librdkafka properties file\n"
        "  -X key=value         librdkafka property (repeatable; after --config)\n"
        "  --from-beginning     start every partition at its first offset (rebuild)\n"
        "  --until-caught-up    stop once lag is 0 on every assigned partition\n"
        "  --exit-on-idle SECS  stop after SECS without a message\n"
        "  --batch N            events per batch: one read and one write round trip\n"
        "                       to Redis (default 2000)\n"
        "  --no-strict-fencing  no WATCHed partition epoch keys and MULTI/EXEC: a write\n"
        "                       script checks each borrower's fence stamp instead\n"
        "                       (needed on Redis Cluster; default: strict)\n"
        "  --no-alert-stream    do not XADD alerts to the Redis stream %s\n"
        "  --stream-maxlen N    cap of that stream (MAXLEN ~ N, default 100000)\n"
        "  --status SECS        status line period on stderr (default 5, 0 = off)\n"
        "  --consumer-id ID     metrics key lw:metrics:<ID> (default host:pid)\n"
        "  --chunk N            borrowers per MSET or write-script call (default %d;\n"
        "                       1 without strict fencing and alert stream, as Redis\n"
        "                       Cluster needs)\n"
        "  --latency-out FILE   at exit write event-to-state latency (Redis ack minus\n"
        "                       the lw-sent-us header) of applied events as JSON:\n"
        "                       {\"state\":{count,p50_us,p99_us,p999_us,max_us},\"alert\":{..}}\n"
        "  --print-script       print the Redis write script and exit\n"
        "  -v, --verbose        debug logging\n"
        "  -h, --help           this text\n",
        LW_DEFAULT_BOOTSTRAP, LW_TOPIC_EVENTS, LW_TOPIC_ALERTS, LW_TOPIC_DEAD_LETTERS,
        LW_DEFAULT_REDIS, LW_REDIS_ALERT_STREAM, LW_CHUNK_DEFAULT);
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
    enum {
        O_BROKERS = 256,
        O_GROUP,
        O_TOPIC,
        O_ALERTS,
        O_DLQ,
        O_REDIS,
        O_RULES,
        O_CONFIG,
        O_BEGIN,
        O_CAUGHT,
        O_IDLE,
        O_BATCH,
        O_NOSTRICT,
        O_NOSTREAM,
        O_MAXLEN,
        O_STATUS,
        O_ID,
        O_PRINT,
        O_CHUNK,
        O_LATENCY
    };
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, O_BROKERS},
        {"group", required_argument, NULL, O_GROUP},
        {"topic", required_argument, NULL, O_TOPIC},
        {"alerts-topic", required_argument, NULL, O_ALERTS},
        {"dlq-topic", required_argument, NULL, O_DLQ},
        {"redis", required_argument, NULL, O_REDIS},
        {"rules", required_argument, NULL, O_RULES},
        {"config", required_argument, NULL, O_CONFIG},
        {"from-beginning", no_argument, NULL, O_BEGIN},
        {"until-caught-up", no_argument, NULL, O_CAUGHT},
        {"exit-on-idle", required_argument, NULL, O_IDLE},
        {"batch", required_argument, NULL, O_BATCH},
        {"no-strict-fencing", no_argument, NULL, O_NOSTRICT},
        {"no-alert-stream", no_argument, NULL, O_NOSTREAM},
        {"stream-maxlen", required_argument, NULL, O_MAXLEN},
        {"status", required_argument, NULL, O_STATUS},
        {"consumer-id", required_argument, NULL, O_ID},
        {"print-script", no_argument, NULL, O_PRINT},
        {"chunk", required_argument, NULL, O_CHUNK},
        {"latency-out", required_argument, NULL, O_LATENCY},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
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
    while ((o = getopt_long(argc, argv, "X:vh", opts, NULL)) != -1) {
        switch (o) {
        case O_BROKERS:
            c.brokers = optarg;
            break;
        case O_GROUP:
            c.group = optarg;
            break;
        case O_TOPIC:
            c.topic = optarg;
            break;
        case O_ALERTS:
            c.alerts_topic = optarg;
            break;
        case O_DLQ:
            c.dlq_topic = optarg;
            break;
        case O_REDIS:
            c.redis_url = optarg;
            break;
        case O_RULES:
            c.rules_file = optarg;
            break;
        case O_CONFIG:
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
        case O_LATENCY:
            c.latency_out = optarg;
            break;
        case O_CHUNK:
            if (!parse_pos(optarg, 4096, &v) || v == 0) {
                fprintf(stderr, "loanwire-exposure: bad number '%s' for --chunk (1..4096)\n",
                        optarg);
                free(kv);
                return 2;
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
            return 0;
        case O_IDLE:
        case O_BATCH:
        case O_MAXLEN:
        case O_STATUS:
            if (!parse_pos(optarg, o == O_BATCH ? 100000 : 1000000000, &v) ||
                (o == O_BATCH && v == 0) || (o == O_MAXLEN && v == 0)) {
                fprintf(stderr, "loanwire-exposure: bad number '%s' for --%s\n", optarg,
                        o == O_IDLE     ? "exit-on-idle"
                        : o == O_BATCH  ? "batch"
                        : o == O_MAXLEN ? "stream-maxlen"
                                        : "status");
                free(kv);
                return 2;
            }
            if (o == O_IDLE)
                c.exit_on_idle_s = (int)v;
            else if (o == O_BATCH)
                c.batch_max = (size_t)v;
            else if (o == O_MAXLEN)
                c.script.stream_maxlen = v;
            else
                c.status_every_s = (int)v;
            break;
        default:
            usage(stderr);
            free(kv);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loanwire-exposure: unexpected argument '%s'\n", argv[optind]);
        free(kv);
        return 2;
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
    lw_err_t err = lw_exposure_run(&c, errstr, sizeof errstr);
    free(kv);
    if (err) {
        lw_error("%s", errstr);
        return 1;
    }
    return 0;
}
