/*
 * produce_main.c - loanwire-produce: JSON Lines loan events to Kafka.
 *
 * Parses options, builds the producer and hands the inputs to lw_jsonl_run()
 * (producers/src/jsonl.c), then prints the summary and picks the exit status.
 */
#include "jsonl.h"

#include "loanwire/conf.h"
#include "loanwire/id.h"
#include "loanwire/log.h"
#include "loanwire/producer.h"
#include "loanwire/validate.h"
#include "loanwire/version.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    LW_EXIT_OK = 0,
    LW_EXIT_UNDELIVERED = 1, /* some valid event not delivered, or an I/O error */
    LW_EXIT_USAGE = 2,       /* bad option, configuration, key or input */
    LW_EXIT_STRICT = 3,      /* --strict and some lines were rejected */
    LW_EXIT_INTERRUPTED = 130,
};

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: loanwire-produce [options] [FILE...]\n"
            "\n"
            "Reads loan events as JSON Lines (one object per line, the plain JSON form;\n"
            "'-' or no FILE reads stdin), validates each, and produces it as single-object\n"
            "Avro to Kafka keyed by borrower_id (idempotent producer, acks=all).\n"
            "\n"
            "Every line is accounted for: delivered, or written to the rejects file after\n"
            "a comment line '# FILE:LINE: FIELD: REASON' (refused lines unchanged; events\n"
            "that failed delivery as JSON). Blank lines and '#' lines are skipped, so a\n"
            "corrected rejects file can be fed back in.\n"
            "\n"
            "Options:\n"
            "  -b, --brokers LIST     bootstrap servers (default $LOANWIRE_BOOTSTRAP or %s)\n"
            "  -t, --topic NAME       topic (default %s)\n"
            "  -F, --config FILE      librdkafka properties file (key=value lines)\n"
            "  -X key=value           librdkafka property, after --config (repeatable)\n"
            "  -I, --id-key FILE      key file to pseudonymise a raw \"national_id\" field\n"
            "                         into borrower_id (>= 64 hex digits, mode 0600;\n"
            "                         it was -k: kcat's -k is the message key)\n"
            "  -r, --rejects FILE     one rejects file for all inputs (default FILE.rejects\n"
            "                         per input, loanwire-rejects.jsonl for stdin)\n"
            "  -n, --dry-run          validate only, send nothing\n"
            "      --stamp            add a header lw-sent-us (wall-clock microseconds at\n"
            "                         send) to every message, for loanwire-exposure\n"
            "                         --latency-out; off by default (it costs both sides)\n"
            "      --max-future SECS  reject an event dated more than SECS ahead of this\n"
            "                         host's clock (default %lld = 24 h; 0: no bound);\n"
            "                         events in the past are always accepted\n"
            "      --strict           exit 3 when any line was rejected\n"
            "  -q, --quiet            no summary line\n"
            "  --log-format FMT       text (default) or json (one object per line)\n"
            "  -h, --help             this text\n"
            "  -V, --version          print the version and exit\n"
            "\n"
            "Exit status: 0 every valid event delivered (rejected lines do not count\n"
            "unless --strict); 1 some event not delivered, or an I/O error; 2 usage,\n"
            "configuration, key or unreadable input; 3 --strict and lines rejected;\n"
            "130 stopped by SIGINT/SIGTERM (sent events flushed for up to 10 s, the rest\n"
            "reported to the rejects file).\n",
            LW_DEFAULT_BOOTSTRAP, LW_TOPIC_EVENTS, (long long)(LW_MAX_FUTURE_MS_DEFAULT / 1000));
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    enum { O_STRICT = 256, O_STAMP, O_FUTURE };
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"topic", required_argument, NULL, 't'},
                                         {"config", required_argument, NULL, 'F'},
                                         {"id-key", required_argument, NULL, 'I'},
                                         {"rejects", required_argument, NULL, 'r'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {"strict", no_argument, NULL, O_STRICT},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"stamp", no_argument, NULL, O_STAMP},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"max-future", required_argument, NULL, O_FUTURE},
                                         {NULL, 0, NULL, 0}};
    const char *brokers = NULL, *topic = NULL, *config = NULL, *key_file = NULL;
    const char **xs;
    int nx = 0, c, rc;
    bool strict = false, quiet = false, stamp = false;
    lw_jsonl_opts_t jo = {0};
    lw_producer_conf_t *pconf = NULL;
    lw_producer_t *p = NULL;
    lw_id_key_t *key = NULL;
    lw_jsonl_t *j;
    lw_jsonl_summary_t sum;
    char err[512];

    lw_log_init(argv[0], LW_LOG_INFO);
    xs = calloc((size_t)argc, sizeof *xs);
    if (!xs)
        return LW_EXIT_USAGE;
    while ((c = getopt_long(argc, argv, "b:t:F:X:I:r:nqhV", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            brokers = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'F':
            config = optarg;
            break;
        case 'X':
            xs[nx++] = optarg;
            break;
        case 'I':
            key_file = optarg;
            break;
        case 'r':
            jo.rejects_path = optarg;
            break;
        case 'n':
            jo.dry_run = true;
            break;
        case O_STRICT:
            strict = true;
            break;
        case O_STAMP:
            stamp = true;
            break;
        case O_FUTURE: {
            char *end;
            errno = 0;
            long long secs = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end || secs < 0 || secs > 1000000000LL) {
                fprintf(stderr, "loanwire-produce: bad number '%s' for --max-future\n", optarg);
                free(xs);
                return LW_EXIT_USAGE;
            }
            lw_validate_set_max_future_ms(secs * 1000);
            break;
        }
        case 'q':
            quiet = true;
            break;
        case 'h':
            usage(stdout);
            free(xs);
            return LW_EXIT_OK;
        case 'V':
            printf("loanwire-produce %s\n", LW_VERSION);
            free(xs);
            return LW_EXIT_OK;
        default:
            usage(stderr);
            free(xs);
            return LW_EXIT_USAGE;
        }
    }
    rc = LW_EXIT_USAGE;
    for (int i = optind; i < argc; i++) {
        if (strcmp(argv[i], "-") != 0 && access(argv[i], R_OK) != 0) {
            lw_error("cannot read input %s", argv[i]);
            goto out;
        }
    }
    if (key_file) {
        key = lw_id_key_load(key_file, err, sizeof err);
        if (!key) {
            lw_error("--id-key: %s", err);
            goto out;
        }
        jo.id_key = key;
    }
    jo.progress = true; /* drawn only when stderr is a terminal */
    j = lw_jsonl_new(&jo);
    if (!j) {
        lw_error("out of memory");
        goto out;
    }

    if (!jo.dry_run) {
        pconf = lw_producer_conf_new();
        if (!pconf) {
            lw_error("out of memory");
            goto out_j;
        }
        if ((brokers &&
             lw_producer_conf_set(pconf, "bootstrap.servers", brokers, err, sizeof err) != LW_OK) ||
            (topic && lw_producer_conf_set(pconf, "topic", topic, err, sizeof err) != LW_OK) ||
            (config && lw_producer_conf_load_file(pconf, config, err, sizeof err) != LW_OK)) {
            lw_error("%s", err);
            lw_producer_conf_destroy(pconf);
            goto out_j;
        }
        for (int i = 0; i < nx; i++) {
            if (lw_producer_conf_set_kv(pconf, xs[i], err, sizeof err) != LW_OK) {
                lw_error("-X %s: %s", xs[i], err);
                lw_producer_conf_destroy(pconf);
                goto out_j;
            }
        }
        lw_producer_conf_set_stamp(pconf, stamp);
        lw_jsonl_producer_callbacks(j, pconf);
        p = lw_producer_new(pconf, err, sizeof err); /* takes pconf */
        if (!p) {
            lw_error("cannot create producer: %s", err);
            goto out_j;
        }
    }

    lw_signals_install();
    lw_jsonl_run(j, p, (const char *const *)argv + optind, argc - optind, &sum);
    lw_producer_destroy(p);

    if (!quiet) {
        if (jo.dry_run)
            lw_info("read %" PRIu64 ", rejected %" PRIu64 ", valid %" PRIu64 " (dry run)", sum.read,
                    sum.rejected, sum.read - sum.rejected);
        else
            lw_info("read %" PRIu64 ", rejected %" PRIu64 ", sent %" PRIu64 ", delivered %" PRIu64
                    ", failed %" PRIu64 "%s",
                    sum.read, sum.rejected, sum.sent, sum.delivered, sum.failed,
                    sum.interrupted ? " (interrupted)" : "");
        if (sum.rejects_written)
            lw_info("%" PRIu64 " entries written to the rejects file%s%s", sum.rejects_written,
                    jo.rejects_path ? " " : "s", jo.rejects_path ? jo.rejects_path : "");
    }
    if (sum.interrupted)
        rc = LW_EXIT_INTERRUPTED;
    else if (sum.io_error || sum.failed > 0 || sum.delivered != sum.sent)
        rc = LW_EXIT_UNDELIVERED;
    else if (strict && sum.rejected > 0)
        rc = LW_EXIT_STRICT;
    else
        rc = LW_EXIT_OK;
out_j:
    lw_jsonl_destroy(j);
out:
    lw_id_key_destroy(key);
    free(xs);
    return rc;
}
