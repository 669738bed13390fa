/*
 * exposure_bench.c - loanwire-exposure-bench: the Redis side of
 * loanwire-exposure without Kafka, for profiling.
 *
 * Reads loan events as JSON Lines (loanwire-gen -o FILE), applies them with
 * lw_store_append()/lw_store_flush() in chunks of --batch events and prints
 * events/s; with --dump FILE it also writes every command the store sent,
 * so `redis-cli --pipe < FILE` into an empty Redis measures the raw Redis
 * rate of the same commands.
 */
#include "exposure_int.h"

#include "loanwire/conf.h"
#include "loanwire/json.h"
#include "loanwire/log.h"
#include "loanwire/version.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "Usage: loanwire-exposure-bench --redis URL [--batch N] [--no-strict-fencing]\n"
               "                               [--retain-ended DUR] [--retain-negative DUR]\n"
               "                               [--dump FILE] EVENTS.jsonl\n"
               "Applies the events (JSON Lines) through the exposure store without Kafka and\n"
               "prints events/s; --dump also writes every command sent to Redis to FILE (RESP,\n"
               "for redis-cli --pipe). --retain-ended / --retain-negative: as loanwire-exposure's\n"
               "(default 90d / 5y; off keeps ended loans).\n"
               "\n"
               "  --log-format FMT text (default) or json (one object per line)\n"
               "  -h, --help       this text\n"
               "  -V, --version    print the version and exit\n"
               "\n"
               "Exit status: 0 done, 1 Redis or input error, 2 usage error.\n");
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    static const struct option opts[] = {
        {"redis", required_argument, NULL, 'r'},
        {"batch", required_argument, NULL, 'b'},
        {"dump", required_argument, NULL, 'd'},
        {"no-strict-fencing", no_argument, NULL, 's'},
        {"retain-ended", required_argument, NULL, 'e'},
        {"retain-negative", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *url = lw_conf_default_redis(), *dump = NULL;
    size_t batch = 2000;
    int64_t ret_ended = 0, ret_neg = 0;
    lw_script_opts_t so;
    lw_script_opts_init(&so);
    int o;
    while ((o = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (o) {
        case 'r':
            url = optarg;
            break;
        case 'b':
            batch = (size_t)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            dump = optarg;
            break;
        case 's':
            so.strict_fencing = false;
            break;
        case 'e':
        case 'n':
            if (!lw_retention_parse(optarg, o == 'e' ? &ret_ended : &ret_neg)) {
                fprintf(stderr, "loanwire-exposure-bench: bad duration '%s' (90d, 5y, off)\n",
                        optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("loanwire-exposure-bench %s\n", LW_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc || batch == 0) {
        usage(stderr);
        return 2;
    }
    FILE *in = fopen(argv[optind], "r");
    if (!in) {
        perror(argv[optind]);
        return 1;
    }
    /* read all events first: parsing JSON is not what we measure */
    size_t n = 0, cap = 1 << 16;
    lw_event_t *evs = malloc(cap * sizeof *evs);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (evs && (len = getline(&line, &lcap, in)) > 0) {
        lw_field_error_t fe;
        if (n == cap) {
            cap *= 2;
            evs = realloc(evs, cap * sizeof *evs);
            if (!evs)
                break;
        }
        if (lw_event_from_json(line, (size_t)len, &evs[n], NULL, &fe) == LW_OK)
            n++;
    }
    free(line);
    fclose(in);
    if (!evs) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    char errstr[512];
    lw_rules_t *rules = lw_rules_default();
    if (rules && lw_rules_set_retention(rules, ret_ended, ret_neg, errstr, sizeof errstr)) {
        fprintf(stderr, "loanwire-exposure-bench: %s\n", errstr);
        return 2;
    }
    lw_store_t *st = lw_store_new(url, rules, &so, errstr, sizeof errstr);
    if (!st) {
        fprintf(stderr, "loanwire-exposure-bench: %s\n", errstr);
        return 1;
    }
    int64_t ep = 0;
    if (lw_store_epoch_next(st, "bench", 0, &ep, errstr, sizeof errstr) != LW_OK) {
        fprintf(stderr, "loanwire-exposure-bench: %s\n", errstr);
        return 1;
    }
    FILE *out = dump ? fopen(dump, "w") : NULL;
    if (dump && !out) {
        perror(dump);
        return 1;
    }
    lw_store_set_tap(st, out);
    /* batches go through the store as the consumer drives it: batch N+1 is
     * staged while N's write is in flight, so the commands (and the dump)
     * are the consumer's */
    lw_apply_result_t *res[2] = {calloc(batch, sizeof **res), calloc(batch, sizeof **res)};
    size_t counts[LW_APPLY_REFUSED + 1] = {0}, alerts = 0, nres[2] = {0, 0};
    int cur = 0;
    bool flying = false;
    lw_flush_t *fl[2] = {NULL, NULL}; /* staged, then in flight */
    int64_t t0 = lw_mono_us();
    for (size_t i = 0;; i += batch) {
        size_t m = i < n ? (n - i < batch ? n - i : batch) : 0;
        for (size_t k = 0; k < m; k++)
            if (lw_store_append(st, &evs[i + k], "bench", 0, ep) != LW_OK) {
                fprintf(stderr, "append failed\n");
                return 1;
            }
        nres[cur] = m;
        fl[cur] = NULL;
        if ((m &&
             lw_store_flush_begin(st, res[cur], NULL, &fl[cur], errstr, sizeof errstr) != LW_OK) ||
            lw_store_flush_end(st, fl[!cur], errstr, sizeof errstr) != LW_OK ||
            lw_store_flush_commit(st, fl[cur], errstr, sizeof errstr) != LW_OK) {
            fprintf(stderr, "flush: %s\n", errstr);
            return 1;
        }
        for (size_t k = 0; flying && k < nres[!cur]; k++) {
            counts[res[!cur][k].code <= LW_APPLY_REFUSED ? res[!cur][k].code : LW_APPLY_REFUSED]++;
            alerts += res[!cur][k].n_alerts;
        }
        if (m == 0)
            break; /* the last write ended */
        flying = true;
        cur = !cur;
    }
    double s = (double)(lw_mono_us() - t0) / 1e6;
    printf("%zu events in %.3f s: %.0f events/s; applied %zu dup %zu ooo %zu fenced %zu "
           "alerts %zu refused %zu\n",
           n, s, (double)n / s, counts[0], counts[1], counts[2], counts[3], alerts, counts[4]);
    if (out) {
        lw_store_set_tap(st, NULL);
        if (fclose(out) != 0) {
            perror(dump);
            return 1;
        }
        printf("commands sent -> %s (SCRIPT LOAD the write script first: sha %s)\n", dump,
               lw_store_script_sha(st));
    }
    lw_store_destroy(st);
    lw_rules_destroy(rules);
    free(res[0]);
    free(res[1]);
    free(evs);
    return 0;
}
