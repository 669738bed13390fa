/*
 * alerts_main.c - loanwire-alerts: options, then lw_alerts_run()
 * (consumers/alerts/src).
 */
#include "loanwire/alerts.h"
#include "loanwire/conf.h"
#include "loanwire/evict.h"
#include "loanwire/log.h"
#include "loanwire/version.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PROPS 64

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: loanwire-alerts [options]\n"
            "Prints over-indebtedness alerts from Kafka (default) or the Redis stream.\n"
            "\n"
            "Source:\n"
            "  --source kafka|redis  where to read (default kafka)\n"
            "  -b, --brokers LIST    Kafka bootstrap (default $LOANWIRE_BOOTSTRAP or %s)\n"
            "  -t, --topic NAME      Kafka topic (default %s)\n"
            "  -F, --config FILE     librdkafka properties file (key=value lines)\n"
            "  -X key=value          librdkafka property (repeatable; after --config)\n"
            "  --redis URL           redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (default\n"
            "                        $LOANWIRE_REDIS or %s); percent-encoded\n"
            "                        user and password, never logged\n"
            "  -g, --group NAME      consumer group: Kafka default loanwire-alerts-$USER,\n"
            "                        Redis stream group default loanwire-alerts\n"
            "  --allow-eviction      --source redis: start even if Redis's maxmemory-policy\n"
            "                        may evict keys (refused by default)\n"
            "  --consumer NAME       Redis stream consumer name (default loanwire-alerts)\n"
            "                        On a Redis Cluster (any node's URL) the per-slot\n"
            "                        streams are polled and merged by entry id, without a\n"
            "                        stream group: --group/--consumer are refused there\n"
            "  --from-beginning      a NEW group starts at the oldest alert (else at the end);\n"
            "                        an existing group always resumes where it stopped\n"
            "  -f, --follow          keep waiting for new alerts (else exit when caught up)\n"
            "  -n, --count N         stop after printing N alerts\n"
            "Filters (repeatable or comma lists; OR within one, AND across):\n"
            "  --rule ID  --platform ID (trigger)  --lender ID (trigger)  --borrower ID\n"
            "  --severity NAME       NAME or higher (INFO < WARNING < CRITICAL); =NAME exact\n"
            "Output:\n"
            "  --json                JSON Lines (the default when stdout is not a terminal)\n"
            "  --text                aligned lines (the default on a terminal)\n"
            "  --log-format FMT      text (default) or json (one object per line)\n"
            "  -v, --verbose, -h, --help, -V, --version\n"
            "\n"
            "An alert is acknowledged (Kafka offset stored and committed / Redis XACK) only\n"
            "after it was printed, so a restart resumes without gaps or repeats; repeats of\n"
            "an alert_id within a run are dropped. SIGINT/SIGTERM: acknowledge, exit 0.\n"
            "\n"
            "Exit status: 0 done (caught up, --count reached, or stopped by a signal);\n"
            "1 usage error, or Kafka/Redis failed.\n",
            LW_DEFAULT_BOOTSTRAP, LW_TOPIC_ALERTS, LW_DEFAULT_REDIS);
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    enum {
        O_SOURCE = 256,
        O_REDIS,
        O_CONSUMER,
        O_FROMB,
        O_RULE,
        O_PLAT,
        O_LEND,
        O_BORR,
        O_SEV,
        O_JSON,
        O_TEXT,
        O_EVICT
    };
    static const struct option opts[] = {{"source", required_argument, NULL, O_SOURCE},
                                         {"brokers", required_argument, NULL, 'b'},
                                         {"allow-eviction", no_argument, NULL, O_EVICT},
                                         {"topic", required_argument, NULL, 't'},
                                         {"config", required_argument, NULL, 'F'},
                                         {"redis", required_argument, NULL, O_REDIS},
                                         {"group", required_argument, NULL, 'g'},
                                         {"consumer", required_argument, NULL, O_CONSUMER},
                                         {"from-beginning", no_argument, NULL, O_FROMB},
                                         {"follow", no_argument, NULL, 'f'},
                                         {"count", required_argument, NULL, 'n'},
                                         {"rule", required_argument, NULL, O_RULE},
                                         {"platform", required_argument, NULL, O_PLAT},
                                         {"lender", required_argument, NULL, O_LEND},
                                         {"borrower", required_argument, NULL, O_BORR},
                                         {"severity", required_argument, NULL, O_SEV},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"text", no_argument, NULL, O_TEXT},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    lw_alerts_conf_t conf;
    lw_alerts_filter_t *filter = lw_alerts_filter_new();
    const char *props[MAX_PROPS + 1] = {NULL};
    int nprops = 0, c, json = -1, rc = 0;
    char errstr[512], *end;
    uint64_t printed = 0;
    bool allow_eviction = false;
    lw_err_t err = LW_OK;
    lw_log_level_t level = LW_LOG_INFO;

    if (!filter)
        return 1;
    lw_alerts_conf_init(&conf);
    while ((c = getopt_long(argc, argv, "b:t:g:X:F:fn:vhV", opts, NULL)) != -1) {
        switch (c) {
        case O_SOURCE:
            if (strcmp(optarg, "kafka") == 0)
                conf.source = LW_ALERTS_KAFKA;
            else if (strcmp(optarg, "redis") == 0)
                conf.source = LW_ALERTS_REDIS;
            else {
                fprintf(stderr, "loanwire-alerts: --source must be kafka or redis\n");
                rc = 1;
            }
            break;
        case 'b':
            conf.brokers = optarg;
            break;
        case 't':
            conf.topic = optarg;
            break;
        case O_REDIS:
            conf.redis_url = optarg;
            break;
        case 'g':
            conf.group = optarg;
            break;
        case O_CONSUMER:
            conf.consumer = optarg;
            break;
        case O_FROMB:
            conf.from_beginning = true;
            break;
        case 'f':
            conf.follow = true;
            break;
        case 'F':
            conf.kafka_conf_file = optarg;
            break;
        case 'X':
            if (nprops == MAX_PROPS) {
                fprintf(stderr, "loanwire-alerts: too many -X\n");
                rc = 1;
            } else
                props[nprops++] = optarg;
            break;
        case 'n':
            conf.count = strtoull(optarg, &end, 10);
            if (!*optarg || *end || optarg[0] == '-' || conf.count == 0) {
                fprintf(stderr, "loanwire-alerts: --count needs a positive integer\n");
                rc = 1;
            }
            break;
        case O_RULE:
            err = lw_alerts_filter_add(filter, LW_ALERTS_F_RULE, optarg, errstr, sizeof errstr);
            break;
        case O_PLAT:
            err = lw_alerts_filter_add(filter, LW_ALERTS_F_PLATFORM, optarg, errstr, sizeof errstr);
            break;
        case O_LEND:
            err = lw_alerts_filter_add(filter, LW_ALERTS_F_LENDER, optarg, errstr, sizeof errstr);
            break;
        case O_BORR:
            err = lw_alerts_filter_add(filter, LW_ALERTS_F_BORROWER, optarg, errstr, sizeof errstr);
            break;
        case O_SEV:
            err = lw_alerts_filter_severity(filter, optarg, errstr, sizeof errstr);
            break;
        case O_JSON:
            json = 1;
            break;
        case O_TEXT:
            json = 0;
            break;
        case O_EVICT:
            allow_eviction = true;
            break;
        case 'v':
            level = LW_LOG_DEBUG;
            break;
        case 'h':
            usage(stdout);
            lw_alerts_filter_destroy(filter);
            return 0;
        case 'V':
            printf("loanwire-alerts %s\n", LW_VERSION);
            lw_alerts_filter_destroy(filter);
            return 0;
        default:
            rc = 1;
        }
        if (err != LW_OK) {
            fprintf(stderr, "loanwire-alerts: %s\n", errstr);
            rc = 1;
            err = LW_OK;
        }
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "loanwire-alerts: unexpected argument %s\n", argv[optind]);
        rc = 1;
    }
    if (rc) {
        usage(stderr);
        lw_alerts_filter_destroy(filter);
        return rc;
    }
    lw_log_init("loanwire-alerts", level);
    lw_signals_install();
    conf.kafka_props = props;
    conf.filter = filter;
    conf.json = json >= 0 ? json == 1 : !isatty(STDOUT_FILENO);
    /* the Redis source acknowledges stream entries: an evicted stream loses them */
    if (conf.source == LW_ALERTS_REDIS &&
        lw_redis_eviction_check(conf.redis_url, allow_eviction, errstr, sizeof errstr) != LW_OK) {
        lw_error("%s", errstr);
        lw_alerts_filter_destroy(filter);
        return 1;
    }

    err = lw_alerts_run(&conf, stdout, &printed, errstr, sizeof errstr);
    lw_alerts_filter_destroy(filter);
    if (err != LW_OK) {
        lw_error("%s", errstr);
        return 1;
    }
    lw_debug("%llu alerts printed", (unsigned long long)printed);
    return 0;
}
