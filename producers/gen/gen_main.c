/*
 * gen_main.c - loanwire-gen: command-line front of the synthetic feed.
 *
 * Parses options, then pulls events from lw_gen (gen.h) and either writes
 * them as JSON Lines (stdout or --out) or produces them to Kafka through the
 * producer library. Pacing (--rate) is a per-event schedule, so a live feed
 * is smooth rather than a burst at the top of each second. Bounds: --events,
 * --duration, SIGINT/SIGTERM; each ends with a flush and a summary.
 */
#include "gen.h"
#include "loanwire/conf.h"
#include "loanwire/json.h"
#include "loanwire/log.h"
#include "loanwire/version.h"
#ifdef LW_GEN_HAVE_PRODUCER
#include "loanwire/producer.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GEN_DEFAULT_EVENTS 100000
#define GEN_MAX_X          64

typedef struct gen_opts {
    lw_gen_conf_t gen;
    bool events_set;
    uint64_t duration_s;
    uint64_t rate;
    const char *out_path;
    const char *id_key_path;
    bool kafka;
    const char *brokers;
    const char *topic;
    const char *config;
    const char *xs[GEN_MAX_X];
    int nx;
} gen_opts_t;

static void gen_usage(FILE *f)
{
    fprintf(f,
            "Usage: loanwire-gen [OPTIONS]\n"
            "Deterministic synthetic feed of Chinese online consumer-credit loan events\n"
            "(Alipay Huabei/Jiebei, WeBank Weilidai, JD Baitiao/Jintiao and smaller lenders,\n"
            "funded by partner banks), with a share of over-borrowers who stack loans,\n"
            "borrow beyond their income or borrow while past due. Same options and seed:\n"
            "the same events, byte for byte.\n"
            "\n"
            "Feed:\n"
            "  --seed N             random seed (default 1); ids carry a tag of it, so\n"
            "                       feeds of different seeds never share a loan or event id\n"
            "  --borrowers N        population size (default 10000, max %u)\n"
            "  --platforms N        platforms 1..%d (default 10: ALIPAY WEBANK JD MEITUAN\n"
            "                       DUXIAOMAN QFIN LEXIN MAXCF ZLCF FINVOLUTION; more are\n"
            "                       synthetic micro-lenders MLENDER-11...)\n"
            "  --over-borrowers PCT share of over-borrowers, 0..100, up to 2 decimals\n"
            "                       (default 3); when > 0 at least one of each kind, and\n"
            "                       the first two of each kind start in the first 10 minutes\n"
            "                       of event time\n"
            "  --start TIME         event time of the start: 2026-01-01, 2026-01-01T08:00:00Z\n"
            "                       or epoch ms (default 2026-01-01T00:00:00Z)\n"
            "  --ramp-days N        ordinary borrowers first apply within N days of the\n"
            "                       start (default 30)\n"
            "  --id-key FILE        HMAC key file for borrower ids (loanwire/id.h format);\n"
            "                       default: a built-in demo key, NOT for production\n"
            "\n"
            "Bounds and pace:\n"
            "  -n, --events N       stop after N events (0 = no bound); default %d when\n"
            "                       --duration is not given either\n"
            "  --duration SEC       stop after SEC seconds of wall-clock time\n"
            "  -r, --rate N         at most N events per second, evenly spaced (default: as\n"
            "                       fast as possible)\n"
            "\n"
            "Output (JSON Lines to stdout by default):\n"
            "  -o, --out FILE       write JSON Lines to FILE\n"
            "  --kafka              produce to Kafka through the Loanwire producer instead\n"
            "                       (validated, single-object Avro, keyed by borrower_id)\n"
            "  -b, --brokers LIST   bootstrap servers (default $LOANWIRE_BOOTSTRAP or %s)\n"
            "  -t, --topic NAME     topic (default %s)\n"
            "  -F, --config FILE    librdkafka properties file (key=value lines)\n"
            "  -X KEY=VALUE         librdkafka property, repeatable; applied after --config\n"
            "\n"
            "  --log-format FMT     text (default) or json (one object per line)\n"
            "  -h, --help           this text\n"
            "  -V, --version        print the version and exit\n"
            "\n"
            "A progress line is drawn on stderr when it is a terminal; a summary (events\n"
            "by type, borrowers, over-borrowers by kind) is always logged at the end.\n"
            "SIGINT/SIGTERM stop cleanly (flush, summary). Exit status: 0 done, 1 failure,\n"
            "2 usage error.\n",
            LW_GEN_MAX_BORROWERS, LW_GEN_MAX_PLATFORMS, GEN_DEFAULT_EVENTS, LW_DEFAULT_BOOTSTRAP,
            LW_TOPIC_EVENTS);
}

static bool gen_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

/* "3", "2.5", "0.25" -> basis points, without floating point. */
static bool gen_parse_pct_bp(const char *s, uint32_t *bp)
{
    uint64_t whole = 0, frac = 0;
    const char *dot = strchr(s, '.');
    char buf[16];
    size_t n;

    if (!dot)
        return gen_parse_u64(s, 100, &whole) && (*bp = (uint32_t)(whole * 100), true);
    n = (size_t)(dot - s);
    if (n == 0 || n >= sizeof buf || strlen(dot + 1) < 1 || strlen(dot + 1) > 2)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (!gen_parse_u64(buf, 100, &whole) || !gen_parse_u64(dot + 1, 99, &frac))
        return false;
    if (strlen(dot + 1) == 1)
        frac *= 10;
    if (whole * 100 + frac > 10000)
        return false;
    *bp = (uint32_t)(whole * 100 + frac);
    return true;
}

static int gen_bad(const char *opt, const char *val, const char *why)
{
    lw_error("%s '%s': %s (see --help)", opt, val, why);
    return 2;
}

static int gen_parse(int argc, char **argv, gen_opts_t *o)
{
    enum {
        O_SEED = 256,
        O_BORROWERS,
        O_PLATFORMS,
        O_OVER,
        O_START,
        O_RAMP,
        O_IDKEY,
        O_DURATION,
        O_KAFKA
    };
    static const struct option longopts[] = {
        {"seed", required_argument, NULL, O_SEED},
        {"borrowers", required_argument, NULL, O_BORROWERS},
        {"platforms", required_argument, NULL, O_PLATFORMS},
        {"over-borrowers", required_argument, NULL, O_OVER},
        {"start", required_argument, NULL, O_START},
        {"ramp-days", required_argument, NULL, O_RAMP},
        {"id-key", required_argument, NULL, O_IDKEY},
        {"events", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, O_DURATION},
        {"rate", required_argument, NULL, 'r'},
        {"out", required_argument, NULL, 'o'},
        {"kafka", no_argument, NULL, O_KAFKA},
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"config", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    uint64_t v;

    lw_gen_conf_init(&o->gen);
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":n:r:o:b:t:F:X:hV", longopts, NULL)) != -1) {
        switch (c) {
        case O_SEED:
            if (!gen_parse_u64(optarg, UINT64_MAX, &o->gen.seed))
                return gen_bad("--seed", optarg, "not an unsigned integer");
            break;
        case O_BORROWERS:
            if (!gen_parse_u64(optarg, LW_GEN_MAX_BORROWERS, &v) || v < 1)
                return gen_bad("--borrowers", optarg, "must be 1..50000000");
            o->gen.borrowers = (uint32_t)v;
            break;
        case O_PLATFORMS:
            if (!gen_parse_u64(optarg, LW_GEN_MAX_PLATFORMS, &v) || v < 1)
                return gen_bad("--platforms", optarg, "must be 1..64");
            o->gen.platforms = (uint32_t)v;
            break;
        case O_OVER:
            if (!gen_parse_pct_bp(optarg, &o->gen.over_borrowers_bp))
                return gen_bad("--over-borrowers", optarg, "must be a percentage 0..100");
            break;
        case O_START:
            if (lw_gen_parse_time(optarg, &o->gen.start_ms) != LW_OK)
                return gen_bad("--start", optarg,
                               "expected YYYY-MM-DD[THH:MM:SS[.mmm]Z] or epoch milliseconds");
            break;
        case O_RAMP:
            if (!gen_parse_u64(optarg, 3650, &v))
                return gen_bad("--ramp-days", optarg, "must be 0..3650");
            o->gen.ramp_ms = (int64_t)v * 86400000LL;
            break;
        case O_IDKEY:
            o->id_key_path = optarg;
            break;
        case 'n':
            if (!gen_parse_u64(optarg, UINT64_MAX / 2, &o->gen.max_events))
                return gen_bad("--events", optarg, "not an unsigned integer");
            o->events_set = true;
            break;
        case O_DURATION:
            if (!gen_parse_u64(optarg, 10ULL * 365 * 86400, &o->duration_s) || o->duration_s == 0)
                return gen_bad("--duration", optarg, "must be a positive number of seconds");
            break;
        case 'r':
            if (!gen_parse_u64(optarg, 100000000, &o->rate) || o->rate == 0)
                return gen_bad("--rate", optarg, "must be 1..100000000 events/s");
            break;
        case 'o':
            o->out_path = optarg;
            break;
        case O_KAFKA:
            o->kafka = true;
            break;
        case 'b':
            o->brokers = optarg;
            break;
        case 't':
            o->topic = optarg;
            break;
        case 'F':
            o->config = optarg;
            break;
        case 'X':
            if (o->nx >= GEN_MAX_X)
                return gen_bad("-X", optarg, "too many -X options");
            if (!strchr(optarg, '='))
                return gen_bad("-X", optarg, "expected KEY=VALUE");
            o->xs[o->nx++] = optarg;
            break;
        case 'h':
            gen_usage(stdout);
            exit(0);
        case 'V':
            printf("loanwire-gen %s\n", LW_VERSION);
            exit(0);
        case ':':
            lw_error("option %s needs a value (see --help)", argv[optind - 1]);
            return 2;
        default:
            lw_error("unknown option %s (see --help)", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        lw_error("unexpected argument '%s' (see --help)", argv[optind]);
        return 2;
    }
    if (o->kafka && o->out_path) {
        lw_error("--kafka and --out exclude each other");
        return 2;
    }
    if (!o->kafka && (o->brokers || o->topic || o->config || o->nx)) {
        lw_error("--brokers, --topic, --config and -X need --kafka");
        return 2;
    }
    if (!o->events_set && !o->duration_s)
        o->gen.max_events = GEN_DEFAULT_EVENTS;
    return 0;
}

/* ---- Sinks ------------------------------------------------------------------ */

typedef struct gen_sink {
    FILE *f;
    char *buf;
    size_t len, cap;
    bool broken_pipe;
#ifdef LW_GEN_HAVE_PRODUCER
    lw_producer_t *prod;
#endif
} gen_sink_t;

static bool gen_flush_buf(gen_sink_t *s)
{
    if (s->len && fwrite(s->buf, 1, s->len, s->f) != s->len) {
        if (errno == EPIPE) {
            s->broken_pipe = true; /* reader went away (| head): a normal end */
            s->len = 0;
            return false;
        }
        lw_error("write failed: %s", strerror(errno));
        s->len = 0;
        return false;
    }
    s->len = 0;
    return true;
}

#ifdef LW_GEN_HAVE_PRODUCER
static uint64_t gen_failures_logged;

static void gen_on_failed(const lw_event_t *ev, lw_err_t err, const char *reason, void *opaque,
                          void *cb_opaque)
{
    (void)opaque;
    (void)cb_opaque;
    if (gen_failures_logged++ < 10)
        lw_error("event %s not delivered: %s: %s", ev ? ev->event_id : "?", lw_err2str(err),
                 reason ? reason : "");
}

static int gen_kafka_open(const gen_opts_t *o, gen_sink_t *s)
{
    char errstr[512];
    lw_producer_conf_t *pc = lw_producer_conf_new();
    int i;

    if (!pc) {
        lw_error("out of memory");
        return 1;
    }
    if (lw_producer_conf_set(pc, "bootstrap.servers",
                             o->brokers ? o->brokers : lw_conf_default_bootstrap(), errstr,
                             sizeof errstr) != LW_OK ||
        lw_producer_conf_set(pc, "topic", o->topic ? o->topic : LW_TOPIC_EVENTS, errstr,
                             sizeof errstr) != LW_OK ||
        (o->config && lw_producer_conf_load_file(pc, o->config, errstr, sizeof errstr) != LW_OK)) {
        lw_error("kafka configuration: %s", errstr);
        lw_producer_conf_destroy(pc);
        return 2;
    }
    for (i = 0; i < o->nx; i++)
        if (lw_producer_conf_set_kv(pc, o->xs[i], errstr, sizeof errstr) != LW_OK) {
            lw_error("-X %s: %s", o->xs[i], errstr);
            lw_producer_conf_destroy(pc);
            return 2;
        }
    lw_producer_conf_set_callbacks(pc, NULL, gen_on_failed, NULL);
    lw_producer_conf_set_stamp(pc, true); /* the latency benchmark's feed: always stamped */
    if (!(s->prod = lw_producer_new(pc, errstr, sizeof errstr))) {
        lw_error("kafka producer: %s", errstr);
        return 1;
    }
    return 0;
}
#endif

/* ---- Main loop -------------------------------------------------------------- */

static void gen_fmt_time(int64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void gen_summary(const lw_gen_t *g, int64_t start_ms, int64_t elapsed_us, bool kafka)
{
    lw_gen_stats_t st;
    char types[512], kinds[256], t0[32], t1[32];
    size_t n = 0;
    int i;

    lw_gen_stats(g, &st);
    for (i = 0; i < LW_EVENT__CNT; i++)
        n += (size_t)snprintf(types + n, sizeof types - n, "%s%s=%" PRIu64, i ? " " : "",
                              lw_event_type_name((lw_event_type_t)i), st.by_type[i]);
    n = 0;
    for (i = 1; i < LW_GEN_KIND__CNT; i++)
        n += (size_t)snprintf(kinds + n, sizeof kinds - n, "%s%s=%" PRIu64, i > 1 ? " " : "",
                              lw_gen_kind_name((lw_gen_kind_t)i), st.over_borrowers[i]);
    gen_fmt_time(start_ms, t0, sizeof t0);
    gen_fmt_time(st.sim_now_ms, t1, sizeof t1);
    lw_info("%" PRIu64 " events %s in %.2f s (%.0f events/s)", st.events,
            kafka ? "produced" : "written", (double)elapsed_us / 1e6,
            elapsed_us > 0 ? (double)st.events * 1e6 / (double)elapsed_us : 0.0);
    lw_info("by type: %s", types);
    lw_info("borrowers seen: %" PRIu64 "; over-borrowers: %s", st.borrowers, kinds);
    lw_info("event time: %s .. %s", t0, t1);
}

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    gen_opts_t o;
    gen_sink_t s;
    lw_gen_t *g = NULL;
    lw_id_key_t *key = NULL;
    lw_progress_t prog;
    lw_event_t ev;
    char errstr[512];
    int rc;
    int64_t t0, deadline, pace_us;
    uint64_t n = 0, pace_n;

    lw_log_init(argv[0], LW_LOG_INFO);
    memset(&o, 0, sizeof o);
    memset(&s, 0, sizeof s);
    if ((rc = gen_parse(argc, argv, &o)) != 0)
        return rc;
#ifndef LW_GEN_HAVE_PRODUCER
    if (o.kafka) {
        lw_error("this build has no producer library; --kafka is unavailable");
        return 2;
    }
#endif
    if (o.id_key_path && !(key = lw_id_key_load(o.id_key_path, errstr, sizeof errstr))) {
        lw_error("--id-key: %s", errstr);
        return 2;
    }
    o.gen.id_key = key;
    if (!(g = lw_gen_new(&o.gen, errstr, sizeof errstr))) {
        lw_error("%s", errstr);
        lw_id_key_destroy(key);
        return 2;
    }
    lw_signals_install();
    rc = 0;
    if (o.kafka) {
#ifdef LW_GEN_HAVE_PRODUCER
        rc = gen_kafka_open(&o, &s);
#endif
    } else {
        s.f = stdout;
        if (o.out_path && !(s.f = fopen(o.out_path, "w"))) {
            lw_error("%s: %s", o.out_path, strerror(errno));
            rc = 1;
        }
        /* Our own 1 MiB buffer; stdio's would only add a copy and hide EPIPE. */
        if (s.f)
            setvbuf(s.f, NULL, _IONBF, 0);
        s.cap = 1 << 20;
        if (!rc && !(s.buf = malloc(s.cap))) {
            lw_error("out of memory");
            rc = 1;
        }
    }
    if (rc) {
        lw_gen_destroy(g);
        lw_id_key_destroy(key);
        return rc;
    }

    lw_progress_init(&prog);
    t0 = lw_mono_us();
    deadline = o.duration_s ? t0 + (int64_t)o.duration_s * 1000000 : INT64_MAX;
    pace_us = t0;
    pace_n = 0;
    while (!lw_stop_requested()) {
        /* Pacing: event n is due at pace_us + (n - pace_n) / rate; sleep only
         * when a millisecond or more ahead, and never bank more than a second
         * of debt (after a stall the schedule restarts instead of bursting). */
        if (o.rate || o.duration_s || (n & 255) == 0) {
            int64_t now = lw_mono_us();
            if (now >= deadline)
                break;
            if (o.rate) {
                int64_t due = pace_us + (int64_t)((n - pace_n) * 1000000 / o.rate);
                if (now > due + 1000000) {
                    pace_us = due = now;
                    pace_n = n;
                }
                if (due - now >= 1000) {
                    int64_t wait_us = due - now;
#ifdef LW_GEN_HAVE_PRODUCER
                    if (s.prod) {
                        lw_producer_poll(s.prod, (int)(wait_us / 1000));
                        continue;
                    }
#endif
                    /* A live feed hands each event on before waiting. */
                    if (s.len && (!gen_flush_buf(&s) || fflush(s.f) != 0))
                        break;
                    struct timespec ts = {wait_us / 1000000, (long)(wait_us % 1000000) * 1000};
                    nanosleep(&ts, NULL);
                    continue;
                }
            }
            if ((n & 255) == 0 || o.rate)
                lw_progress_update(&prog, "loanwire-gen", n, o.gen.max_events, NULL);
        }
        if (!lw_gen_next(g, &ev)) {
            if (lw_gen_error(g)[0]) {
                lw_error("generator: %s", lw_gen_error(g));
                rc = 1;
            }
            break;
        }
        n++;
#ifdef LW_GEN_HAVE_PRODUCER
        if (s.prod) {
            lw_err_t err = lw_producer_send(s.prod, &ev, NULL, errstr, sizeof errstr);
            if (err == LW_ERR_VALIDATION) {
                lw_error("generated event %s rejected: %s", ev.event_id, errstr);
                rc = 1;
            } else if (err != LW_OK) {
                lw_error("kafka: %s", errstr);
                rc = 1;
                break;
            }
            continue;
        }
#endif
        {
            int len;
            if (s.cap - s.len < 4096 && !gen_flush_buf(&s))
                break;
            len = lw_event_to_json(&ev, s.buf + s.len, s.cap - s.len - 1);
            if (len < 0) {
                lw_error("event %s does not fit the JSON buffer", ev.event_id);
                rc = 1;
                break;
            }
            s.len += (size_t)len;
            s.buf[s.len++] = '\n';
        }
    }
    lw_progress_finish(&prog);

    if (s.f) {
        if (!s.broken_pipe && (!gen_flush_buf(&s) || fflush(s.f) != 0) && !s.broken_pipe) {
            lw_error("write failed: %s", strerror(errno));
            rc = 1;
        }
        if (s.f != stdout && fclose(s.f) != 0) {
            lw_error("%s: %s", o.out_path, strerror(errno));
            rc = 1;
        }
    }
#ifdef LW_GEN_HAVE_PRODUCER
    if (s.prod) {
        lw_producer_stats_t ps;
        if (lw_producer_flush(s.prod, 60000) != LW_OK)
            lw_error("kafka: not every event was acknowledged within 60 s");
        lw_producer_stats(s.prod, &ps);
        lw_info("kafka: sent %" PRIu64 ", delivered %" PRIu64 ", failed %" PRIu64
                ", rejected %" PRIu64 ", in flight %" PRIu64,
                ps.sent, ps.delivered, ps.failed, ps.rejected, ps.in_flight);
        if (ps.failed || ps.in_flight || ps.rejected)
            rc = 1;
        lw_producer_destroy(s.prod);
    }
#endif
    gen_summary(g, o.gen.start_ms, lw_mono_us() - t0, o.kafka);
    if (lw_stop_requested())
        lw_info("stopped by signal");
    free(s.buf);
    lw_gen_destroy(g);
    lw_id_key_destroy(key);
    return rc;
}
