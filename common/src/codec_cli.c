/*
 * codec_cli.c - the loanwire-avro program, kept in the library so that
 * main() stays a one-liner. Encodes JSON to single-object Avro, decodes any
 * known schema version back to JSON, and prints Parsing Canonical Forms and
 * CRC-64-AVRO fingerprints (used by tests/unit/test_interop.py against
 * fastavro, and by people checking what is on a topic).
 */
#include "codec_int.h"
#include "loanwire/json.h"
#include "loanwire/validate.h"
#include "loanwire/version.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char lw_avro_usage[] =
    "Usage: loanwire-avro COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  encode        read one event (or alert) as JSON on stdin, write its single-object\n"
    "                Avro encoding (C3 01, 8-byte fingerprint, datum) to stdout, binary\n"
    "  decode        read one single-object record of any known schema version (events,\n"
    "                alerts or credit inquiries) on stdin, print it as one line of JSON\n"
    "  fingerprint F print the CRC-64-AVRO fingerprint of schema file F as 16 lowercase\n"
    "                hex digits in wire order (the 8 little-endian bytes after C3 01)\n"
    "  canonical F   print the Parsing Canonical Form of schema file F\n"
    "\n"
    "Options:\n"
    "  --schema S    the schema: 'event' (current LoanEvent, the default), 'alert'\n"
    "                (OverIndebtednessAlert), 'v1' (schemas/v1/LoanEvent.avsc), an\n"
    "                embedded path such as v1/LoanEvent.avsc, or an .avsc file that is one\n"
    "                of the embedded versions. encode writes with it; decode accepts only\n"
    "                records of its kind (any version)\n"
    "  --lines       batch mode. encode: JSON Lines in, each record out framed as a 4-byte\n"
    "                big-endian length followed by the record. decode: that framing in,\n"
    "                JSON Lines out. Bad lines are reported on stderr (line number, field,\n"
    "                reason) and skipped; the exit status is then 1\n"
    "  --no-validate encode without the domain checks of lw_event_validate()\n"
    "  --log-format FMT text (default) or json (one object per line)\n"
    "  -h, --help    this text\n"
    "  -V, --version print the version and exit\n"
    "\n"
    "Events given as JSON must carry borrower_id; national_id (a raw id) is refused here\n"
    "because pseudonymising needs the platform key (use loanwire-produce).\n"
    "Exit status: 0 on success, 1 on bad input, 2 on bad usage.\n";

#define LW_CLI_MAX_INPUT (16u << 20)

typedef struct lw_cli {
    lw_codec_t *codec;
    lw_record_kind_t kind;
    bool kind_given;
    const char *version; /* embedded path to encode with; NULL: current */
    bool lines;
    bool validate;
} lw_cli_t;

static volatile sig_atomic_t lw_cli_stop;

static void lw_cli_on_signal(int sig)
{
    (void)sig;
    lw_cli_stop = 1;
}

/* Reads a whole stream (at most LW_CLI_MAX_INPUT bytes). */
static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) {
            if (ferror(f)) {
                free(buf);
                return NULL;
            }
            break;
        }
        if (cap >= LW_CLI_MAX_INPUT) {
            free(buf);
            errno = EFBIG;
            return NULL;
        }
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb)
            free(buf);
        buf = nb;
    }
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    if (!f)
        return NULL;
    buf = read_all(f, len);
    fclose(f);
    return buf;
}

/* --schema: a name, an embedded path or a file holding a known version. */
static int pick_schema(lw_cli_t *c, const char *s)
{
    char errstr[256];
    if (!strcmp(s, "event") || !strcmp(s, "LoanEvent")) {
        c->kind = LW_RECORD_LOAN_EVENT;
    } else if (!strcmp(s, "alert") || !strcmp(s, "OverIndebtednessAlert")) {
        c->kind = LW_RECORD_ALERT;
    } else {
        const char *want = !strcmp(s, "v1") ? "v1/LoanEvent.avsc" : s;
        const char *json = NULL, *path;
        char *text = NULL, *pcf;
        size_t len;
        lw_record_kind_t kind;
        for (size_t i = 0; (path = lw_schema_embedded(i, &json)); i++)
            if (!strcmp(path, want))
                break;
        if (!path) {
            text = read_file(s, &len);
            if (!text) {
                fprintf(stderr,
                        "loanwire-avro: --schema %s: neither a schema name nor a readable "
                        "file: %s\n",
                        s, strerror(errno));
                return -1;
            }
            json = text;
        }
        pcf = lw_schema_canonical(json, errstr, sizeof(errstr));
        free(text);
        if (!pcf) {
            fprintf(stderr, "loanwire-avro: --schema %s: %s\n", s, errstr);
            return -1;
        }
        path = lw_codec_version_path(c->codec, lw_fingerprint64(pcf, strlen(pcf)), &kind);
        free(pcf);
        if (!path) {
            fprintf(stderr,
                    "loanwire-avro: --schema %s is not one of the schema versions built "
                    "in (schemas/)\n",
                    s);
            return -1;
        }
        c->kind = kind;
        c->version = path;
    }
    c->kind_given = true;
    return 0;
}

/* One JSON text -> one framed record in out[cap]. */
static int encode_one(lw_cli_t *c, const char *text, size_t len, unsigned char *out, size_t cap,
                      size_t *out_len, char *msg, size_t msg_size)
{
    lw_field_error_t fe;
    char raw[LW_ID_MAX + 1];
    union {
        lw_event_t ev;
        lw_alert_t al;
        lw_inquiry_t iq;
    } u;
    lw_err_t err;
    char errstr[256];

    if (c->kind == LW_RECORD_ALERT)
        err = lw_alert_from_json(text, len, &u.al, &fe);
    else
        err = lw_event_from_json(text, len, &u.ev, raw, &fe);
    if (!err && c->kind == LW_RECORD_LOAN_EVENT && raw[0]) {
        snprintf(msg, msg_size,
                 "field '%s': raw national ids cannot be encoded here; give "
                 "borrower_id (loanwire-produce pseudonymises with the platform key)",
                 LW_RAW_ID_FIELD);
        return -1;
    }
    if (!err && c->kind == LW_RECORD_LOAN_EVENT && c->validate)
        err = lw_event_validate(&u.ev, &fe);
    if (err) {
        snprintf(msg, msg_size, "field '%s': %s", fe.field, fe.reason);
        return -1;
    }
    if (c->version)
        err = lw_codec_encode_version(c->codec, c->version, &u, out, cap, out_len, errstr,
                                      sizeof(errstr));
    else
        err = lw_codec_encode(c->codec, c->kind, &u, out, cap, out_len);
    if (err) {
        snprintf(msg, msg_size, "cannot encode: %s", c->version ? errstr : lw_err2str(err));
        return -1;
    }
    return 0;
}

static int decode_one(lw_cli_t *c, const unsigned char *buf, size_t len, FILE *out, char *msg,
                      size_t msg_size)
{
    union {
        lw_event_t ev;
        lw_alert_t al;
        lw_inquiry_t iq;
    } u;
    char errstr[256], json[4096];
    int kind = c->kind_given ? (int)c->kind : lw_codec_record_kind(c->codec, buf, len);
    lw_err_t err;
    int n;

    if (kind < 0)
        kind = LW_RECORD_LOAN_EVENT; /* let the decoder say what is wrong */
    err = lw_codec_decode(c->codec, (lw_record_kind_t)kind, buf, len, &u, errstr, sizeof(errstr));
    if (err) {
        snprintf(msg, msg_size, "%s: %s", lw_err2str(err), errstr);
        return -1;
    }
    n = kind == LW_RECORD_ALERT     ? lw_alert_to_json(&u.al, json, sizeof(json))
        : kind == LW_RECORD_INQUIRY ? lw_inquiry_to_json(&u.iq, json, sizeof(json))
                                    : lw_event_to_json(&u.ev, json, sizeof(json));
    if (n < 0) {
        snprintf(msg, msg_size, "record too large to print");
        return -1;
    }
    fwrite(json, 1, (size_t)n, out);
    fputc('\n', out);
    return 0;
}

static int cmd_encode(lw_cli_t *c)
{
    unsigned char out[LW_CODEC_MAX_ALERT];
    char msg[400];
    size_t len, olen;
    int rc = 0;

    if (!c->lines) {
        char *text = read_all(stdin, &len);
        if (!text) {
            fprintf(stderr, "loanwire-avro: reading stdin: %s\n", strerror(errno));
            return 1;
        }
        if (encode_one(c, text, len, out, sizeof(out), &olen, msg, sizeof(msg))) {
            fprintf(stderr, "loanwire-avro: %s\n", msg);
            free(text);
            return 1;
        }
        free(text);
        fwrite(out, 1, olen, stdout);
        return fflush(stdout) ? 1 : 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    while (!lw_cli_stop && (n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        if (encode_one(c, line, (size_t)n, out, sizeof(out), &olen, msg, sizeof(msg))) {
            fprintf(stderr, "loanwire-avro: line %lu: %s\n", lineno, msg);
            rc = 1;
            continue;
        }
        unsigned char hdr[4] = {(unsigned char)(olen >> 24), (unsigned char)(olen >> 16),
                                (unsigned char)(olen >> 8), (unsigned char)olen};
        fwrite(hdr, 1, 4, stdout);
        fwrite(out, 1, olen, stdout);
    }
    free(line);
    if (fflush(stdout))
        rc = 1;
    return lw_cli_stop ? 1 : rc;
}

static int cmd_decode(lw_cli_t *c)
{
    char msg[400];
    size_t len;
    int rc = 0;

    if (!c->lines) {
        unsigned char *buf = (unsigned char *)read_all(stdin, &len);
        if (!buf) {
            fprintf(stderr, "loanwire-avro: reading stdin: %s\n", strerror(errno));
            return 1;
        }
        if (decode_one(c, buf, len, stdout, msg, sizeof(msg))) {
            fprintf(stderr, "loanwire-avro: %s\n", msg);
            rc = 1;
        }
        free(buf);
        return fflush(stdout) || rc ? 1 : 0;
    }
    unsigned char hdr[4], *buf = malloc(LW_CLI_MAX_INPUT);
    unsigned long recno = 0;
    if (!buf)
        return 1;
    while (!lw_cli_stop) {
        size_t got = fread(hdr, 1, 4, stdin);
        if (got == 0)
            break;
        recno++;
        if (got < 4) {
            fprintf(stderr, "loanwire-avro: record %lu: input ends inside the length prefix\n",
                    recno);
            rc = 1;
            break;
        }
        len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
        if (len > LW_CLI_MAX_INPUT) {
            fprintf(stderr, "loanwire-avro: record %lu: length %zu too large\n", recno, len);
            rc = 1;
            break;
        }
        if (fread(buf, 1, len, stdin) != len) {
            fprintf(stderr, "loanwire-avro: record %lu: input ends inside the record\n", recno);
            rc = 1;
            break;
        }
        if (decode_one(c, buf, len, stdout, msg, sizeof(msg))) {
            fprintf(stderr, "loanwire-avro: record %lu: %s\n", recno, msg);
            rc = 1;
        }
    }
    free(buf);
    if (fflush(stdout))
        rc = 1;
    return lw_cli_stop ? 1 : rc;
}

static int cmd_schema(const char *file, bool fingerprint)
{
    char errstr[256], *pcf;
    size_t len;
    char *text = read_file(file, &len);
    if (!text) {
        fprintf(stderr, "loanwire-avro: %s: %s\n", file, strerror(errno));
        return 1;
    }
    pcf = lw_schema_canonical(text, errstr, sizeof(errstr));
    free(text);
    if (!pcf) {
        fprintf(stderr, "loanwire-avro: %s: %s\n", file, errstr);
        return 1;
    }
    if (fingerprint) {
        uint64_t fp = lw_fingerprint64(pcf, strlen(pcf));
        for (int b = 0; b < 8; b++)
            printf("%02x", (unsigned)(fp >> (8 * b)) & 0xff);
        printf("\n");
    } else {
        printf("%s\n", pcf);
    }
    free(pcf);
    return fflush(stdout) ? 1 : 0;
}

int lw_avro_tool_main(int argc, char **argv)
{
    lw_cli_t c = {.kind = LW_RECORD_LOAN_EVENT, .validate = true};
    const char *cmd = NULL, *file = NULL, *schema = NULL;
    char errstr[512];
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(lw_avro_usage, stdout);
            return 0;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("loanwire-avro %s\n", LW_VERSION);
            return fflush(stdout) ? 1 : 0;
        } else if (!strcmp(a, "--lines")) {
            c.lines = true;
        } else if (!strcmp(a, "--no-validate")) {
            c.validate = false;
        } else if (!strcmp(a, "--schema") && i + 1 < argc) {
            schema = argv[++i];
        } else if (!strncmp(a, "--schema=", 9)) {
            schema = a + 9;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "loanwire-avro: unknown option %s (see --help)\n", a);
            return 2;
        } else if (!cmd) {
            cmd = a;
        } else if (!file) {
            file = a;
        } else {
            fprintf(stderr, "loanwire-avro: unexpected argument %s (see --help)\n", a);
            return 2;
        }
    }
    if (!cmd) {
        fputs(lw_avro_usage, stderr);
        return 2;
    }
    if (!strcmp(cmd, "fingerprint") || !strcmp(cmd, "canonical")) {
        if (!file) {
            fprintf(stderr, "loanwire-avro: %s needs a schema file\n", cmd);
            return 2;
        }
        return cmd_schema(file, cmd[0] == 'f');
    }
    if (strcmp(cmd, "encode") && strcmp(cmd, "decode")) {
        fprintf(stderr, "loanwire-avro: unknown command %s (see --help)\n", cmd);
        return 2;
    }
    if (file) {
        fprintf(stderr, "loanwire-avro: %s reads stdin; unexpected argument %s\n", cmd, file);
        return 2;
    }
    c.codec = lw_codec_new(errstr, sizeof(errstr));
    if (!c.codec) {
        fprintf(stderr, "loanwire-avro: %s\n", errstr);
        return 1;
    }
    if (schema && pick_schema(&c, schema)) {
        lw_codec_destroy(c.codec);
        return 2;
    }
    signal(SIGINT, lw_cli_on_signal);
    signal(SIGTERM, lw_cli_on_signal);
    rc = cmd[0] == 'e' ? cmd_encode(&c) : cmd_decode(&c);
    lw_codec_destroy(c.codec);
    return rc;
}
