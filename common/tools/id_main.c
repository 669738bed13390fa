/*
 * id_main.c - loanwire-id: turn national ids into pseudonymous borrower ids.
 *
 *   loanwire-id --key-file FILE [ID...]      ids as arguments, or one per line on stdin
 *
 * Prints one borrower id per input id, in order. A refused id prints an empty
 * line (so output line N always answers input N) and "line N: reason" on
 * stderr; the run goes on and exits 1 at the end. The work is lw_id_*() in
 * common/src/id.c.
 */
#include "loanwire/id.h"
#include "loanwire/log.h"
#include "loanwire/version.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: loanwire-id --key-file FILE [ID...]\n"
                "\n"
                "Prints the pseudonymous borrower id of each national id, one per line:\n"
                "base64url(HMAC-SHA256(key, normalised id)[0..16)), 22 characters.\n"
                "Ids come from the arguments, or one per line on standard input.\n"
                "\n"
                "Normalisation drops spaces and hyphens and upper-cases. An 18-character id\n"
                "must be a PRC resident id with a valid check digit; a 15-digit legacy PRC\n"
                "id becomes its 18-digit form first (GB 11643-1999: \"19\" after the area\n"
                "code, then the check digit); other ids of 5..32 letters/digits are taken\n"
                "as they are.\n"
                "A refused id prints an empty line and 'line N: reason' on stderr.\n"
                "\n"
                "Options:\n"
                "  -k, --key-file FILE  shared key: >= 64 hex digits on one line, mode 0600\n"
                "                       (default: $LOANWIRE_ID_KEY_FILE)\n"
                "  --log-format FMT     text (default) or json (one object per line)\n"
                "  -h, --help           this text\n"
                "  -V, --version        print the version and exit\n"
                "\n"
                "Exit status: 0 all ids converted, 1 some id refused, 2 usage or key error.\n");
}

/* Converts one id; returns 0 on success. */
static int convert(const lw_id_key_t *key, const char *raw, const char *what, unsigned long n)
{
    char out[LW_BORROWER_ID_LEN + 1], err[256];

    if (lw_id_pseudonymise(key, raw, out, err, sizeof err) != LW_OK) {
        fprintf(stderr, "%s %lu: %s\n", what, n, err);
        putchar('\n');
        return -1;
    }
    puts(out);
    return 0;
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    static const struct option opts[] = {{"key-file", required_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *key_file = getenv("LOANWIRE_ID_KEY_FILE");
    char err[512];
    lw_id_key_t *key;
    int c, bad = 0;

    lw_log_init(argv[0], LW_LOG_INFO);
    while ((c = getopt_long(argc, argv, "k:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            key_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("loanwire-id %s\n", LW_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!key_file || !*key_file) {
        lw_error("--key-file is required (see --help)");
        return 2;
    }
    key = lw_id_key_load(key_file, err, sizeof err);
    if (!key) {
        lw_error("%s", err);
        return 2;
    }
    lw_signals_install();

    if (optind < argc) {
        for (int i = optind; i < argc && !lw_stop_requested(); i++)
            bad |= convert(key, argv[i], "argument", (unsigned long)(i - optind + 1)) != 0;
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        unsigned long lineno = 0;

        while (!lw_stop_requested() && (n = getline(&line, &cap, stdin)) >= 0) {
            lineno++;
            if ((size_t)n != strlen(line)) {
                fprintf(stderr, "line %lu: NUL byte in line\n", lineno);
                putchar('\n');
                bad = 1;
                continue;
            }
            bad |= convert(key, line, "line", lineno) != 0;
        }
        if (ferror(stdin) && errno != EINTR) {
            lw_error("reading stdin: %s", strerror(errno));
            bad = 1;
        }
        free(line);
    }
    lw_id_key_destroy(key);
    if (fflush(stdout) != 0) {
        lw_error("writing stdout: %s", strerror(errno));
        return 2;
    }
    if (lw_stop_requested())
        return 130;
    return bad ? 1 : 0;
}
