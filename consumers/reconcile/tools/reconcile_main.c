/*
 * reconcile_main.c - loanwire-reconcile: options, then lw_recon_run()
 * (consumers/reconcile/src) and the summary.
 */
#include "loanwire/conf.h"
#include "loanwire/log.h"
#include "loanwire/reconcile.h"
#include "loanwire/version.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: loanwire-reconcile --redis URL --platform P [--full] [SNAPSHOT.jsonl]\n"
            "Compares a platform's snapshot of its open loans with the bureau's state.\n"
            "\n"
            "SNAPSHOT.jsonl has one open loan per line, a JSON object with exactly\n"
            "  platform_id, loan_id, borrower_id, sequence, outstanding_fen (integer fen)\n"
            "(\"-\" or no file: standard input). Each discrepancy is one JSON line on\n"
            "stdout: kind, platform_id, borrower_id, loan_id, line, and the values on\n"
            "both sides: \"platform\" {sequence, outstanding_fen} and \"bureau\"\n"
            "{sequence, outstanding_fen, status, lender_id, updated_at} (null: none).\n"
            "Kinds:\n"
            "  missing_at_bureau    open on the platform; unknown to the bureau, or closed\n"
            "                       or written off there (whatever its sequence)\n"
            "  bureau_behind        the bureau's sequence is lower than the snapshot's\n"
            "  bureau_ahead         the snapshot is older than the bureau's state\n"
            "  balance_mismatch     same sequence, different outstanding_fen\n"
            "  unknown_to_platform  (--full) active (ACTIVE or DELINQUENT) at the bureau\n"
            "                       for platform P, absent from the snapshot\n"
            "\n"
            "Options:\n"
            "  --redis URL      redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (default\n"
            "                   $LOANWIRE_REDIS or %s); a single Redis or any\n"
            "                   node of a Redis Cluster (detected); never logged\n"
            "  --platform P     the platform reconciled; a line of another is refused\n"
            "  --full           also report the bureau's active loans of P the snapshot\n"
            "                   lacks: keeps 11-21 bytes per snapshot loan in memory and\n"
            "                   SCANs every borrower key on every master\n"
            "  --batch N        snapshot loans per pipelined read (default 1000)\n"
            "  --max-errors N   bad lines reported one by one (default 100; all counted)\n"
            "  -h, --help, -V, --version\n"
            "\n"
            "A bad line (not JSON, a field missing, unknown or of the wrong type, an\n"
            "amount not an integer in range, another platform) is reported on stderr as\n"
            "FILE:LINE: FIELD: why, is not compared, and makes the exit status 2; the\n"
            "other lines are still compared. Without --full a loan listed twice is\n"
            "compared twice; with --full its second line is a bad line. A summary goes\n"
            "to stderr. SIGINT/SIGTERM stop between batches (exit 2: incomplete).\n"
            "\n"
            "Exit status: 0 no discrepancy; 1 discrepancies; 2 usage error, a bad\n"
            "line, or an I/O or Redis failure.\n",
            LW_DEFAULT_REDIS);
}

static bool parse_size(const char *s, size_t min, size_t max, size_t *out)
{
    char *end;
    if (!*s || *s == '-')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v < min || v > max)
        return false;
    *out = (size_t)v;
    return true;
}

int main(int argc, char **argv)
{
    enum { O_REDIS = 256, O_PLATFORM, O_FULL, O_BATCH, O_MAXERR };
    static const struct option opts[] = {{"redis", required_argument, NULL, O_REDIS},
                                         {"platform", required_argument, NULL, O_PLATFORM},
                                         {"full", no_argument, NULL, O_FULL},
                                         {"batch", required_argument, NULL, O_BATCH},
                                         {"max-errors", required_argument, NULL, O_MAXERR},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    lw_recon_conf_t conf;
    lw_recon_conf_init(&conf);
    conf.redis_url = getenv("LOANWIRE_REDIS");
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (c) {
        case O_REDIS:
            conf.redis_url = optarg;
            break;
        case O_PLATFORM:
            conf.platform = optarg;
            break;
        case O_FULL:
            conf.full = true;
            break;
        case O_BATCH:
            if (!parse_size(optarg, 1, 100000, &conf.batch)) {
                fprintf(stderr, "loanwire-reconcile: --batch must be 1..100000\n");
                rc = 2;
            }
            break;
        case O_MAXERR:
            if (!parse_size(optarg, 0, SIZE_MAX, &conf.max_line_errors)) {
                fprintf(stderr, "loanwire-reconcile: --max-errors must be a number >= 0\n");
                rc = 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("loanwire-reconcile %s\n", LW_VERSION);
            return 0;
        default:
            rc = 2;
        }
    }
    if (rc == 0 && (!conf.platform || !conf.platform[0])) {
        fprintf(stderr, "loanwire-reconcile: --platform is required\n");
        rc = 2;
    }
    if (rc == 0 && argc - optind > 1) {
        fprintf(stderr, "loanwire-reconcile: one snapshot at a time (got %d files)\n",
                argc - optind);
        rc = 2;
    }
    if (rc) {
        fprintf(stderr, "Try 'loanwire-reconcile --help'.\n");
        return rc;
    }
    conf.input = optind < argc ? argv[optind] : NULL;
    lw_log_init("loanwire-reconcile", LW_LOG_INFO);
    lw_signals_install();

    lw_recon_stats_t st;
    char errstr[512];
    lw_err_t err = lw_recon_run(&conf, &st, errstr, sizeof errstr);
    lw_recon_summary(&conf, &st, stderr);
    if (err != LW_OK) {
        lw_error("%s", errstr);
        return 2;
    }
    if (st.rejected) {
        lw_error("%llu bad snapshot line(s): the reconciliation is incomplete",
                 (unsigned long long)st.rejected);
        return 2;
    }
    return st.discrepancies ? 1 : 0;
}
