/*
 * query_main.c - loanwire-query: options, then the server or a one-off
 * lookup (--borrower). The work is in lw_query (consumers/query/src).
 *
 * Under systemd (Type=notify, deploy/systemd/loanwire-query.service) READY=1
 * goes out once lw_query_start() returned, i.e. the socket is bound and
 * listening and the workers run; STOPPING=1 when a signal ends the server.
 * Without $NOTIFY_SOCKET sd_notify() does nothing.
 */
#include "loanwire/conf.h"
#include "loanwire/id.h"
#include "loanwire/listen.h"
#include "loanwire/evict.h"
#include "loanwire/log.h"
#include "loanwire/query.h"
#include "loanwire/version.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: loanwire-query [options]\n"
            "Serves borrowers' exposure and recent alerts from the bureau's Redis over HTTP.\n"
            "\n"
            "  --redis URL        redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (default\n"
            "                     $LOANWIRE_REDIS or %s); USER and PASSWORD\n"
            "                     percent-encoded; never logged. A single Redis or any\n"
            "                     node of a Redis Cluster (detected; DB 0 there)\n"
            "  --listen HOST:PORT numeric address to bind (default %s:%d; PORT 0 = any)\n"
            "  --tokens FILE      bearer tokens, one per line: TOKEN INSTITUTION_ID, or\n"
            "                     the token alone for the bureau's staff (institution\n"
            "                     BUREAU); # comments; must not be accessible by group\n"
            "                     or others (chmod 600); each of >= 128 bits: 22\n"
            "                     base64url or 32 hex characters\n"
            "  --brokers LIST     Kafka for the inquiry records (default $LOANWIRE_BOOTSTRAP\n"
            "                     or %s)\n"
            "  --inquiries-topic T  where every look-up is recorded (default %s)\n"
            "  --no-auth          serve data endpoints without tokens (development only)\n"
            "  --threads N        worker threads, each with its own Redis connection (%d)\n"
            "  --max-connections N\n"
            "                     open connections in all; more are refused (%d)\n"
            "  --max-per-ip N     open connections from one client address (%d)\n"
            "  --header-timeout S seconds a connection has to send a request's headers,\n"
            "                     from connecting or from its previous answer; then it\n"
            "                     is closed however slowly bytes still come (%d)\n"
            "  --idle-timeout S   seconds without a byte either way before closing (%d)\n"
            "  --web-dir DIR      the dashboard's files (default: ../share/loanwire/web\n"
            "                     beside this program)\n"
            "  --allow-eviction   start even if Redis's maxmemory-policy may evict keys\n"
            "                     (refused by default: it would drop borrower state)\n"
            "  --log-format FMT   text (default) or json (one object per line)\n"
            "  --cookie-secure    mark the dashboard's session cookie Secure (served\n"
            "                     over HTTPS through a proxy such as stunnel)\n"
            "  --borrower ID      print that borrower's exposure JSON and exit (an\n"
            "                     operator's tool: records no inquiry): 0 found, 3\n"
            "                     unknown borrower, 2 malformed id, 1 error\n"
            "  -v, --verbose      debug logging\n"
            "  -h, --help         this text\n"
            "  -V, --version      print the version and exit\n"
            "\n"
            "Endpoints (GET only, but POST /session; 405 otherwise, 413 when a body is sent):\n"
            "  /v1/borrowers/{borrower_id}/exposure?purpose=P   token; P is LOAN_APPROVAL,\n"
            "             CREDIT_CARD_APPROVAL, GUARANTEE_REVIEW, POST_LOAN_MANAGEMENT or\n"
            "             BORROWER_REQUEST; each look-up is a credit inquiry recorded on the\n"
            "             inquiries topic before the answer; 503 when Kafka does not\n"
            "             confirm it; 400 bad id or purpose, 404 unknown (recorded too)\n"
            "  /v1/alerts?since=MS|STREAM_ID&rule=ID&limit=N (1..%d, default %d); token\n"
            "  /healthz   PING Redis (every master of a cluster): 200 {\"status\":\"up\"}\n"
            "             or 503 {\"status\":\"down\"}\n"
            "             (no token; with one, also the round trip or the error)\n"
            "  /metrics   Prometheus text (no token)\n"
            "Dashboard (a browser; sign in with a token for a session cookie):\n"
            "  /  the page; POST /session (Authorization: Bearer) signs in;\n"
            "  /v1/alerts/stream (Server-Sent Events), /v1/dashboard/stats: token or session\n"
            "One access line per request goes to stderr. SIGINT/SIGTERM stop the server.\n"
            "Under systemd (Type=notify) READY=1 is sent once the server listens.\n"
            "\n"
            "Exit status: 0 stopped by SIGINT/SIGTERM (or --borrower found); 1 could not\n"
            "start, or a usage error; --borrower as above.\n",
            LW_DEFAULT_REDIS, LW_QUERY_DEFAULT_HOST, LW_QUERY_DEFAULT_PORT, LW_DEFAULT_BOOTSTRAP,
            LW_TOPIC_INQUIRIES, LW_QUERY_DEFAULT_THREADS, LW_QUERY_DEFAULT_MAX_CONNECTIONS,
            LW_QUERY_DEFAULT_MAX_PER_IP, LW_QUERY_DEFAULT_HEADER_TIMEOUT,
            LW_QUERY_DEFAULT_IDLE_TIMEOUT, LW_QUERY_ALERTS_MAX, LW_QUERY_ALERTS_DEFAULT);
}

static int lookup_one(const char *redis_url, const char *bid)
{
    lw_redis_url_t u;
    lw_rcluster_t *rc;
    char errstr[512], *json = NULL;
    bool found;
    lw_err_t err;

    if (!lw_borrower_id_is_valid(bid)) {
        lw_error("--borrower %s: borrower_id must be 22 base64url characters", bid);
        return 2;
    }
    if (lw_redis_url_parse(redis_url, &u, errstr, sizeof errstr) != LW_OK) {
        lw_error("--redis: %s", errstr);
        return 1;
    }
    if (!(rc = lw_query_redis_connect(&u, errstr, sizeof errstr))) {
        lw_error("%s (start it with ./deploy/stack.sh up)", errstr);
        return 1;
    }
    err = lw_query_exposure_json(rc, bid, &json, &found, errstr, sizeof errstr);
    lw_rcluster_destroy(rc);
    if (err != LW_OK) {
        lw_error("%s", errstr);
        return err == LW_ERR_INVALID_ARG ? 2 : 1;
    }
    if (!found) {
        lw_error("borrower %s: not found", bid);
        return 3;
    }
    printf("%s\n", json);
    free(json);
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    static const struct option opts[] = {{"redis", required_argument, NULL, 'r'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"tokens", required_argument, NULL, 't'},
                                         {"no-auth", no_argument, NULL, 'N'},
                                         {"threads", required_argument, NULL, 'T'},
                                         {"max-connections", required_argument, NULL, 'C'},
                                         {"max-per-ip", required_argument, NULL, 'P'},
                                         {"header-timeout", required_argument, NULL, 'H'},
                                         {"idle-timeout", required_argument, NULL, 'I'},
                                         {"borrower", required_argument, NULL, 'b'},
                                         {"web-dir", required_argument, NULL, 'W'},
                                         {"cookie-secure", no_argument, NULL, 'S'},
                                         {"brokers", required_argument, NULL, 'k'},
                                         {"inquiries-topic", required_argument, NULL, 'Q'},
                                         {"allow-eviction", no_argument, NULL, 'E'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    lw_query_conf_t conf;
    const char *borrower = NULL;
    char errstr[512];
    lw_query_t *q;
    int c;
    bool allow_eviction = false;
    lw_log_level_t level = LW_LOG_INFO;

    lw_query_conf_init(&conf);
    conf.redis_url = lw_conf_default_redis();
    while ((c = getopt_long(argc, argv, "vhV", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            conf.redis_url = optarg;
            break;
        case 'l':
            if (lw_listen_parse_host(optarg, conf.host, sizeof conf.host, &conf.port, errstr,
                                     sizeof errstr) != LW_OK) {
                fprintf(stderr, "loanwire-query: %s\n", errstr);
                return 1;
            }
            break;
        case 't':
            conf.tokens_path = optarg;
            break;
        case 'N':
            conf.no_auth = true;
            break;
        case 'T':
            conf.threads = atoi(optarg);
            break;
        case 'C':
        case 'P':
        case 'H':
        case 'I': {
            char *end;
            long v;
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > 1000000) {
                fprintf(stderr, "loanwire-query: --%s needs a positive integer, got \"%s\"\n",
                        c == 'C'   ? "max-connections"
                        : c == 'P' ? "max-per-ip"
                        : c == 'H' ? "header-timeout"
                                   : "idle-timeout",
                        optarg);
                return 1;
            }
            if (c == 'C')
                conf.max_connections = (int)v;
            else if (c == 'P')
                conf.max_per_ip = (int)v;
            else if (c == 'H')
                conf.header_timeout = (int)v;
            else
                conf.idle_timeout = (int)v;
            break;
        }
        case 'b':
            borrower = optarg;
            break;
        case 'k':
            conf.brokers = optarg;
            break;
        case 'Q':
            conf.inquiries_topic = optarg;
            break;
        case 'W':
            conf.web_dir = optarg;
            break;
        case 'S':
            conf.cookie_secure = true;
            break;
        case 'E':
            allow_eviction = true;
            break;
        case 'v':
            level = LW_LOG_DEBUG;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("loanwire-query %s\n", LW_VERSION);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loanwire-query: unexpected argument %s\n", argv[optind]);
        return 1;
    }
    lw_log_init("loanwire-query", level);
    if (borrower)
        return lookup_one(conf.redis_url, borrower);

    lw_signals_install();
    /* the API starts without Redis (it answers 503 until Redis is back); then the policy
     * cannot be read now, which is said, not fatal */
    lw_err_t everr = lw_redis_eviction_check(conf.redis_url, allow_eviction, errstr, sizeof errstr);
    if (everr == LW_ERR_REDIS) {
        lw_warn("maxmemory-policy not checked: %s", errstr);
    } else if (everr != LW_OK) {
        lw_error("%s", errstr);
        return 1;
    }
    if (!(q = lw_query_start(&conf, errstr, sizeof errstr))) {
        lw_error("%s", errstr);
        return 1;
    }
    lw_info("listening on %s:%d (redis %s, %s)", conf.host, lw_query_port(q),
            lw_redis_url_redact(conf.redis_url, errstr, sizeof errstr),
            conf.no_auth ? "NO AUTHENTICATION" : "bearer tokens");
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s:%d", conf.host, lw_query_port(q));
    while (!lw_stop_requested())
        usleep(100 * 1000);
    sd_notify(0, "STOPPING=1");
    lw_info("stopping");
    lw_query_stop(q);
    return 0;
}
