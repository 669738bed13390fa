/*
 * gen.c - the synthetic loan-event feed (see gen.h).
 *
 * One pseudo-random stream (xoshiro256**, seeded through splitmix64) drives
 * everything, and the order in which it is consumed depends only on the
 * configuration, so a seed names one feed. Borrowers sit in a min-heap on
 * their next action time; each pop runs that borrower's earliest action and
 * usually emits one event. Simulated time therefore never goes backwards,
 * neither globally nor per borrower, and a loan's sequence grows by one per
 * event.
 *
 * Money is int64 fen throughout: schedules split the principal evenly with
 * the remainder on the last instalment, interest is principal * bp / 120000
 * per month. No floating point anywhere, so the feed is the same on every
 * machine.
 */
#include "gen_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RMB(x)         ((int64_t)(x)*100)
#define SEC_MS         1000LL
#define MIN_MS         (60 * SEC_MS)
#define HOUR_MS        (60 * MIN_MS)
#define DAY_MS         (24 * HOUR_MS)
#define NORMAL_MISS_BP 250 /* chance that an instalment / statement is missed */
#define OVER_MISS_BP   600
#define MISREPORT_BP   40 /* chance that a repayment report is wrong (then corrected) */
#define DQ_STEPS       6

static const int32_t gen_dpd_ladder[DQ_STEPS] = {1, 30, 60, 90, 120, 150};
/* Chance (bp) that a delinquency at each step cures before the next one. */
static const uint32_t gen_cure_bp[DQ_STEPS] = {5500, 3500, 2500, 1500, 1000, 500};

/* ---- The market ------------------------------------------------------------ */

static const uint8_t gen_t_short[] = {3, 6, 12, 0};
static const uint8_t gen_t_wld[] = {5, 10, 20, 0}; /* Weilidai's own terms */
static const uint8_t gen_t_mid[] = {3, 6, 12, 24, 0};
static const uint8_t gen_t_all[] = {3, 6, 12, 24, 36, 0};

typedef struct gen_platform_def {
    const char *id;
    bool knows_income;
    uint32_t weight;
    const char *own;
    uint16_t own_pct;
    const char *partners[12];
    uint8_t nproducts;
    gen_product_t products[2];
} gen_platform_def_t;

/* clang-format off */
#define REV(code, lo, hi)        {code, LW_PRODUCT_REVOLVING, RMB(lo), RMB(hi), NULL}
#define INST(code, lo, hi, term) {code, LW_PRODUCT_INSTALLMENT, RMB(lo), RMB(hi), term}

/* Ordered by size: --platforms N takes the first N. Weights are rough shares. */
static const gen_platform_def_t gen_market[] = {
    {"ALIPAY", false, 30, "ANT-CCF", 30,
     {"BANK-ICBC", "BANK-CMB", "BANK-NINGBO", "BANK-SHANGHAI", "CITIC-CF", "BANK-HUAXIA",
      "BANK-NANJING", "BANK-BOC", "BANK-CQRCB", "BANK-HUISHANG"},
     2, {REV("HB", 500, 50000), INST("JB", 1000, 200000, gen_t_short)}},
    {"WEBANK", true, 20, "WEBANK", 80,
     {"BANK-HUARUN", "BANK-SHANGHAI", "BANK-BOB", "BANK-CQRCB"},
     2, {REV("WLD", 500, 200000), INST("WLDI", 1000, 200000, gen_t_wld)}},
    {"JD", true, 14, "JD-MICRO", 30,
     {"BANK-CGB", "BANK-SHANGHAI", "BANK-NINGBO", "BANK-BOB", "CITIC-CF", "BANK-JIANGSU"},
     2, {REV("BT", 500, 50000), INST("JT", 1000, 200000, gen_t_all)}},
    {"MEITUAN", false, 8, "MEITUAN-MICRO", 20,
     {"BANK-CMB", "BANK-JIANGSU", "BANK-NANJING", "BANK-HUAXIA"},
     2, {REV("YF", 500, 50000), INST("MTJQ", 1000, 200000, gen_t_mid)}},
    {"DUXIAOMAN", true, 7, "DXM-MICRO", 20,
     {"BANK-CITIC", "BANK-HUAXIA", "BANK-BOB", "BANK-NINGBO"},
     1, {INST("YQH", 1000, 200000, gen_t_all)}},
    {"QFIN", false, 6, "QFIN-MICRO", 10,
     {"BANK-SHANGHAI", "BANK-BOB", "BANK-CGB", "ZHAOLIAN-CF", "CITIC-CF"},
     1, {INST("JT360", 1000, 200000, gen_t_all)}},
    {"LEXIN", true, 5, "LEXIN-MICRO", 10,
     {"BANK-SHANGHAI", "BANK-JIANGSU", "MAXCF"},
     1, {INST("FQL", 1000, 100000, gen_t_mid)}},
    {"MAXCF", true, 4, "MAXCF", 100, {NULL}, 1, {INST("AYH", 1000, 200000, gen_t_all)}},
    {"ZLCF", true, 3, "ZHAOLIAN-CF", 100, {NULL}, 1, {INST("ZLHQ", 1000, 200000, gen_t_all)}},
    {"FINVOLUTION", false, 3, "FINV-MICRO", 10,
     {"BANK-HUISHANG", "BANK-NANJING", "BANK-CQRCB"},
     1, {INST("PPD", 1000, 50000, gen_t_short)}},
};
/* clang-format on */
#define GEN_MARKET_CNT (sizeof gen_market / sizeof gen_market[0])

/* County codes for synthetic national ids (Beijing, Shanghai, Shenzhen, ...). */
static const char *const gen_regions[32] = {
    "110101", "110105", "110108", "120101", "130102", "140105", "210102", "220102",
    "230102", "310101", "310104", "310115", "320102", "320506", "330106", "330203",
    "340104", "350203", "360102", "370102", "370202", "410105", "420106", "430104",
    "440104", "440305", "440306", "450103", "500103", "510107", "530102", "610113"};
#define GEN_ID_DAYS  16384 /* birth dates 1960-01-01 .. 2004-11-09 */
#define GEN_ID_SPACE (32ULL * GEN_ID_DAYS * 1000)

/* A fixed key so that demo feeds join across runs; never for production. */
static const char gen_demo_key[] = "loanwire demo id key - NOT for production use";

/* ---- Random numbers -------------------------------------------------------- */

static uint64_t gen_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t gen_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t gen_rand(lw_gen_t *g)
{
    uint64_t *s = g->rng;
    uint64_t r = gen_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = gen_rotl(s[3], 45);
    return r;
}

/* Uniform in [0, n); multiply-shift for 32-bit ranges (Lemire, bias < 2^-32). */
static inline uint64_t gen_below(lw_gen_t *g, uint64_t n)
{
    if (n <= 1)
        return 0;
    if (n <= UINT32_MAX)
        return ((gen_rand(g) >> 32) * n) >> 32;
    return gen_rand(g) % n;
}

static inline int64_t gen_range(lw_gen_t *g, int64_t lo, int64_t hi)
{
    return hi <= lo ? lo : lo + (int64_t)gen_below(g, (uint64_t)(hi - lo) + 1);
}

static inline bool gen_chance(lw_gen_t *g, uint32_t bp)
{
    return gen_below(g, 10000) < bp;
}

/* Exponentially distributed delay with the given mean, capped at 8 means.
 * -ln(u) comes from a fixed-point log2 (integer part from the leading zeros,
 * fraction linear in the mantissa): no libm, identical everywhere. */
static int64_t gen_exp(lw_gen_t *g, int64_t mean)
{
    uint32_t u = (uint32_t)(gen_rand(g) >> 32) | 1;
    int ip = 31 - __builtin_clz(u);
    uint32_t frac = ip >= 16 ? (u >> (ip - 16)) & 0xFFFF : (u << (16 - ip)) & 0xFFFF;
    uint64_t neglog2 = (32ULL << 16) - (((uint64_t)ip << 16) | frac); /* 16.16 */
    uint64_t negln = (neglog2 * 45426) >> 16;                         /* * ln 2 */
    if (negln > (8ULL << 16))
        negln = 8ULL << 16;
    return (int64_t)(((uint64_t)mean * negln) >> 16);
}

/* ---- Calendar -------------------------------------------------------------- */

/* Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian). */
static int64_t gen_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void gen_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t gen_floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && ((a < 0) != (b < 0)));
}

/* Midnight, k months after the midnight `base` (whose day of month is <= 28). */
static int64_t gen_add_months(int64_t base, int k)
{
    int64_t y;
    unsigned m, d;
    gen_civil_from_days(gen_floor_div(base, DAY_MS), &y, &m, &d);
    int64_t mi = (int64_t)m - 1 + k;
    y += gen_floor_div(mi, 12);
    mi -= gen_floor_div(mi, 12) * 12;
    return gen_days_from_civil(y, (unsigned)mi + 1, d) * DAY_MS;
}

/* A due date `days` days from now, moved back to the 28th when later in the
 * month, so that every month has it. */
static int64_t gen_due_date(int64_t now, int days)
{
    int64_t y;
    unsigned m, d;
    gen_civil_from_days(gen_floor_div(now, DAY_MS) + days, &y, &m, &d);
    return gen_days_from_civil(y, m, d > 28 ? 28 : d) * DAY_MS;
}

lw_err_t lw_gen_parse_time(const char *s, int64_t *ms_out)
{
    unsigned y, mo, d, h = 0, mi = 0, se = 0, ms = 0;
    int n = 0;
    const char *p;

    if (!s || !*s || !ms_out)
        return LW_ERR_INVALID_ARG;
    for (p = s; *p >= '0' && *p <= '9'; p++)
        ;
    if (*p == '\0') { /* integer milliseconds */
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end || p - s > 15)
            return LW_ERR_INVALID_ARG;
        *ms_out = (int64_t)v;
        return LW_OK;
    }
    if (sscanf(s, "%4u-%2u-%2u%n", &y, &mo, &d, &n) != 3 || n != 10)
        return LW_ERR_INVALID_ARG;
    p = s + n;
    if (*p == 'T' || *p == ' ') {
        int n2 = 0;
        if (sscanf(p + 1, "%2u:%2u:%2u%n", &h, &mi, &se, &n2) != 3 || n2 != 8)
            return LW_ERR_INVALID_ARG;
        p += 1 + n2;
        if (*p == '.') {
            int n3 = 0;
            if (sscanf(p + 1, "%3u%n", &ms, &n3) != 1 || n3 != 3)
                return LW_ERR_INVALID_ARG;
            p += 1 + n3;
        }
        if (*p == 'Z')
            p++;
    }
    if (*p || y < 1970 || y > 2099 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        se > 59)
        return LW_ERR_INVALID_ARG;
    {
        /* Reject 2026-02-30 rather than roll it into March. */
        int64_t y2;
        unsigned m2, d2;
        int64_t days = gen_days_from_civil(y, mo, d);
        gen_civil_from_days(days, &y2, &m2, &d2);
        if (m2 != mo || d2 != d)
            return LW_ERR_INVALID_ARG;
        *ms_out =
            days * DAY_MS + (int64_t)h * HOUR_MS + (int64_t)mi * MIN_MS + (int64_t)se * SEC_MS + ms;
    }
    return LW_OK;
}

/* ---- Set-up ---------------------------------------------------------------- */

void lw_gen_conf_init(lw_gen_conf_t *conf)
{
    memset(conf, 0, sizeof *conf);
    conf->seed = 1;
    conf->borrowers = 10000;
    conf->platforms = GEN_MARKET_CNT;
    conf->over_borrowers_bp = 300;
    conf->start_ms = LW_GEN_DEFAULT_START;
    conf->ramp_ms = 30 * DAY_MS;
}

static const char *const gen_kind_names[LW_GEN_KIND__CNT] = {"ordinary", "stacker", "income", "big",
                                                             "delinquent"};

const char *lw_gen_kind_name(lw_gen_kind_t k)
{
    return (unsigned)k < LW_GEN_KIND__CNT ? gen_kind_names[k] : NULL;
}

const char *lw_gen_platform_name(const lw_gen_t *g, uint32_t i)
{
    return g && i < g->nplatforms ? g->platforms[i].id : NULL;
}

const char *lw_gen_error(const lw_gen_t *g)
{
    return g ? g->err : "";
}

static int gen_lender(lw_gen_t *g, const char *name)
{
    uint32_t i;
    for (i = 0; i < g->nlenders; i++)
        if (!strcmp(g->lenders[i], name))
            return (int)i;
    if (g->nlenders >= GEN_MAX_LENDERS)
        return -1;
    snprintf(g->lenders[g->nlenders], sizeof g->lenders[0], "%s", name);
    return (int)g->nlenders++;
}

static bool gen_build_market(lw_gen_t *g)
{
    uint32_t i;
    for (i = 0; i < g->nplatforms; i++) {
        gen_platform_t *p = &g->platforms[i];
        int li;
        if (i < GEN_MARKET_CNT) {
            const gen_platform_def_t *d = &gen_market[i];
            uint32_t j;
            snprintf(p->id, sizeof p->id, "%s", d->id);
            p->knows_income = d->knows_income;
            p->weight = d->weight;
            p->own_pct = d->own_pct;
            if ((li = gen_lender(g, d->own)) < 0)
                return false;
            p->own_lender = (uint16_t)li;
            for (j = 0; j < 12 && d->partners[j]; j++) {
                if ((li = gen_lender(g, d->partners[j])) < 0)
                    return false;
                p->partners[p->npartners++] = (uint16_t)li;
            }
            p->nproducts = d->nproducts;
            memcpy(p->products, d->products, sizeof p->products);
        } else {
            /* Small local micro-lenders that fund their own loans. */
            static const gen_product_t small = INST("ML", 1000, 50000, gen_t_short);
            snprintf(p->id, sizeof p->id, "MLENDER-%02u", i + 1);
            p->knows_income = true;
            p->weight = 1;
            p->own_pct = 100;
            if ((li = gen_lender(g, p->id)) < 0)
                return false;
            p->own_lender = (uint16_t)li;
            p->nproducts = 1;
            p->products[0] = small;
        }
        g->weight_total += p->weight;
    }
    return true;
}

static uint64_t gen_gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* A multiplier coprime with n, so that i -> (i * a + b) mod n permutes. */
static uint64_t gen_coprime(lw_gen_t *g, uint64_t n)
{
    for (;;) {
        uint64_t a = gen_below(g, n) | 1;
        if (n <= 2 || gen_gcd(a, n) == 1)
            return a;
    }
}

static int64_t gen_income(lw_gen_t *g, int64_t lo_rmb, int64_t hi_rmb)
{
    /* Skewed towards the low end, as incomes are. */
    int64_t u = (int64_t)gen_below(g, 1001);
    return RMB(lo_rmb) + RMB(hi_rmb - lo_rmb) * u * u / 1000000 / 100 * 100;
}

static void gen_init_borrowers(lw_gen_t *g)
{
    uint32_t n = g->nborrowers, i;
    uint64_t n_over = 0, a, b;

    if (g->conf.over_borrowers_bp > 0) {
        n_over = ((uint64_t)n * g->conf.over_borrowers_bp + 9999) / 10000;
        if (n_over < 4)
            n_over = n < 4 ? n : 4; /* one of each kind at the least */
        if (n_over > n)
            n_over = n;
    }
    a = gen_coprime(g, n);
    b = gen_below(g, n);
    for (i = 0; i < n; i++) {
        gen_borrower_t *br = &g->borrowers[i];
        uint64_t q = ((uint64_t)i * a + b) % n;
        br->kind = LW_GEN_NORMAL;
        br->next_slot = -1;
        if (q < n_over) {
            br->kind = (uint8_t)(1 + q % 4);
            br->showcase = q < 8;
        }
        if (br->showcase)
            br->app_at = g->conf.start_ms + gen_range(g, 0, 10 * MIN_MS);
        else
            br->app_at = g->conf.start_ms + gen_range(g, 0, g->conf.ramp_ms);
        switch (br->kind) {
        case LW_GEN_STACKER:
            /* 6-9 applications, at most 20 h apart, to distinct lenders: at
             * least five lenders within 7 days, the stacking rule's default. */
            br->burst_left = (uint8_t)gen_range(g, 6, 9);
            if ((br->has_income = gen_chance(g, 5000)))
                br->income_fen = gen_income(g, 60000, 300000);
            break;
        case LW_GEN_INCOME:
            br->burst_left = (uint8_t)gen_range(g, 2, 3);
            br->has_income = true;
            br->income_fen = gen_income(g, 30000, 80000);
            break;
        case LW_GEN_BIG:
            br->burst_left = 3;
            br->has_income = false;
            break;
        case LW_GEN_DELINQUENT:
            br->burst_left = 1;
            if ((br->has_income = gen_chance(g, 5000)))
                br->income_fen = gen_income(g, 60000, 300000);
            break;
        default:
            if ((br->has_income = gen_chance(g, 5500)))
                br->income_fen = gen_income(g, 30000, 500000);
            break;
        }
        g->heap[i].at = br->app_at;
        g->heap[i].idx = i;
    }
}

/* ---- The heap (4-ary, keyed by time then borrower index) ------------------- */

static inline bool gen_heap_less(const gen_heap_ent_t *x, const gen_heap_ent_t *y)
{
    return x->at < y->at || (x->at == y->at && x->idx < y->idx);
}

static void gen_sift_down(gen_heap_ent_t *h, uint32_t n, uint32_t i)
{
    gen_heap_ent_t e = h[i];
    for (;;) {
        uint32_t c = 4 * i + 1, best, j;
        if (c >= n)
            break;
        best = c;
        for (j = c + 1; j < c + 4 && j < n; j++)
            if (gen_heap_less(&h[j], &h[best]))
                best = j;
        if (!gen_heap_less(&h[best], &e))
            break;
        h[i] = h[best];
        i = best;
    }
    h[i] = e;
}

lw_gen_t *lw_gen_new(const lw_gen_conf_t *conf, char *errstr, size_t errstr_size)
{
    lw_gen_t *g;
    uint64_t s;
    uint32_t i;

    if (!conf) {
        snprintf(errstr, errstr_size, "no configuration");
        return NULL;
    }
    if (conf->borrowers < 1 || conf->borrowers > LW_GEN_MAX_BORROWERS) {
        snprintf(errstr, errstr_size, "borrowers must be 1..%u, got %u", LW_GEN_MAX_BORROWERS,
                 conf->borrowers);
        return NULL;
    }
    if (conf->platforms < 1 || conf->platforms > LW_GEN_MAX_PLATFORMS) {
        snprintf(errstr, errstr_size, "platforms must be 1..%d, got %u", LW_GEN_MAX_PLATFORMS,
                 conf->platforms);
        return NULL;
    }
    if (conf->over_borrowers_bp > 10000) {
        snprintf(errstr, errstr_size, "over-borrowers must be 0..100%%");
        return NULL;
    }
    /* Keep all event times well inside what lw_event_validate accepts. */
    if (conf->start_ms < 946684800000LL || conf->start_ms > 3786825600000LL) {
        snprintf(errstr, errstr_size, "start must be between 2000-01-01 and 2090-01-01");
        return NULL;
    }
    if (conf->ramp_ms < 0 || conf->ramp_ms > 3650 * DAY_MS) {
        snprintf(errstr, errstr_size, "ramp must be 0..3650 days");
        return NULL;
    }
    if (!(g = calloc(1, sizeof *g))) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    g->conf = *conf;
    s = conf->seed;
    for (i = 0; i < 4; i++)
        g->rng[i] = gen_splitmix(&s);
    /* Ids carry a tag of the seed, so feeds of different seeds never share a
     * loan or event id in one topic, and one seed replayed repeats its ids. */
    snprintf(g->seedtag, sizeof g->seedtag, "%08x", (unsigned)(gen_splitmix(&s) >> 32));

    if (conf->id_key) {
        g->key = conf->id_key;
    } else {
        g->own_key = lw_id_key_new((const unsigned char *)gen_demo_key, sizeof gen_demo_key - 1,
                                   errstr, errstr_size);
        if (!g->own_key)
            goto fail;
        g->key = g->own_key;
    }

    g->nplatforms = conf->platforms;
    g->nborrowers = conf->borrowers;
    g->platforms = calloc(g->nplatforms, sizeof *g->platforms);
    g->borrowers = calloc(g->nborrowers, sizeof *g->borrowers);
    g->heap = calloc(g->nborrowers, sizeof *g->heap);
    g->nloans_cap = 1024;
    g->loans = calloc(g->nloans_cap, sizeof *g->loans);
    if (!g->platforms || !g->borrowers || !g->heap || !g->loans) {
        snprintf(errstr, errstr_size, "out of memory for %u borrowers", g->nborrowers);
        goto fail;
    }
    g->free_head = GEN_NO_LOAN;
    if (!gen_build_market(g)) {
        snprintf(errstr, errstr_size, "too many distinct lenders");
        goto fail;
    }
    g->id_perm_a = gen_coprime(g, GEN_ID_SPACE);
    while (g->id_perm_a % 5 == 0)
        g->id_perm_a = gen_coprime(g, GEN_ID_SPACE);
    g->id_perm_b = gen_below(g, GEN_ID_SPACE);
    gen_init_borrowers(g);
    for (i = g->nborrowers; i-- > 0;)
        gen_sift_down(g->heap, g->nborrowers, i);
    g->now = conf->start_ms;
    g->stats.sim_now_ms = conf->start_ms;
    return g;
fail:
    lw_gen_destroy(g);
    return NULL;
}

void lw_gen_destroy(lw_gen_t *g)
{
    if (!g)
        return;
    lw_id_key_destroy(g->own_key);
    free(g->platforms);
    free(g->borrowers);
    free(g->heap);
    free(g->loans);
    free(g);
}

void lw_gen_stats(const lw_gen_t *g, lw_gen_stats_t *out)
{
    if (g)
        *out = g->stats;
    else
        memset(out, 0, sizeof *out);
}

/* ---- Borrower ids ---------------------------------------------------------- */

/* A valid 18-character PRC resident id, unique per borrower index: region,
 * birth date and sequence are a permutation of the index. */
static void gen_national_id(const lw_gen_t *g, uint32_t i, char out[19])
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char check[] = "10X98765432";
    uint64_t j = ((uint64_t)i * g->id_perm_a + g->id_perm_b) % GEN_ID_SPACE;
    unsigned region = (unsigned)(j % 32), seq;
    int64_t y;
    unsigned m, d;
    int k, sum = 0;

    j /= 32;
    gen_civil_from_days(gen_days_from_civil(1960, 1, 1) + (int64_t)(j % GEN_ID_DAYS), &y, &m, &d);
    seq = (unsigned)(j / GEN_ID_DAYS);
    snprintf(out, 19, "%s%04u%02u%02u%03u", gen_regions[region], (unsigned)y, m, d, seq % 1000);
    for (k = 0; k < 17; k++)
        sum += (out[k] - '0') * w[k];
    out[17] = check[sum % 11];
    out[18] = '\0';
}

/* ---- Loans ------------------------------------------------------------------ */

static uint32_t gen_loan_alloc(lw_gen_t *g)
{
    uint32_t li;
    if (g->free_head != GEN_NO_LOAN) {
        li = g->free_head;
        g->free_head = g->loans[li].next_free;
    } else {
        if (g->nloans_used == g->nloans_cap) {
            uint32_t cap = g->nloans_cap * 2;
            gen_loan_t *nl = realloc(g->loans, (size_t)cap * sizeof *nl);
            if (!nl)
                return GEN_NO_LOAN;
            g->loans = nl;
            g->nloans_cap = cap;
        }
        li = g->nloans_used++;
    }
    memset(&g->loans[li], 0, sizeof g->loans[li]);
    g->loans[li].t_due = g->loans[li].t_aux = g->loans[li].t_corr = GEN_NEVER;
    g->loans[li].loan_no = ++g->next_loan_no;
    return li;
}

static void gen_loan_free(lw_gen_t *g, gen_borrower_t *b, uint32_t li)
{
    uint8_t s;
    for (s = 0; s < b->nloans; s++)
        if (b->loans[s] == li) {
            b->loans[s] = b->loans[--b->nloans];
            break;
        }
    g->loans[li].next_free = g->free_head;
    g->free_head = li;
}

static const gen_product_t *gen_prod(const lw_gen_t *g, const gen_loan_t *l)
{
    return &g->platforms[l->platform].products[l->product];
}

static int64_t gen_due(const gen_loan_t *l, int k)
{
    return gen_add_months(l->due0, k);
}

/* Principal of instalment k: equal parts, the remainder on the last. */
static int64_t gen_part(const gen_loan_t *l, int k)
{
    int64_t base = l->principal / l->term;
    return k == l->term - 1 ? l->principal - base * (l->term - 1) : base;
}

/* Dues from the first missed one up to now (at least one). */
static int gen_missed(const gen_loan_t *l, int64_t now)
{
    int n = 1;
    while (n < 12 && gen_due(l, l->miss_k + n) <= now && (l->revolving || l->miss_k + n < l->term))
        n++;
    return n;
}

/* Principal past due after `missed` missed dues. */
static int64_t gen_past_due(const gen_loan_t *l, int missed)
{
    int64_t sum = 0;
    int j;
    if (l->revolving)
        sum = l->minpay * missed;
    else
        for (j = 0; j < missed; j++)
            sum += gen_part(l, l->miss_k + j);
    return sum < l->outstanding ? sum : l->outstanding;
}

static uint32_t gen_miss_bp(const gen_borrower_t *b)
{
    return b->kind == LW_GEN_NORMAL ? NORMAL_MISS_BP : OVER_MISS_BP;
}

/* Plans instalment k of an instalment loan: paid on the due day, or missed
 * (the first DELINQUENCY the day after). */
static void gen_plan_due(lw_gen_t *g, const gen_borrower_t *b, gen_loan_t *l)
{
    int64_t d = gen_due(l, l->k);
    if (!l->revolving && ((l->force_miss && l->k == 0) || gen_chance(g, gen_miss_bp(b)))) {
        l->due_kind = GEN_DUE_DQ;
        l->dq_step = 0;
        l->miss_k = l->k;
        l->t_due = d + DAY_MS + gen_range(g, 0, 8 * HOUR_MS);
    } else {
        l->due_kind = GEN_DUE_PAY;
        l->t_due = d + gen_range(g, 6 * HOUR_MS, 22 * HOUR_MS);
    }
    if (l->t_due < g->now)
        l->t_due = g->now;
}

/* ---- Events ----------------------------------------------------------------- */

static char *gen_put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *gen_put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static void gen_fill(lw_gen_t *g, const gen_borrower_t *b, gen_loan_t *l, lw_event_type_t type,
                     int64_t amount, lw_event_t *ev)
{
    const gen_platform_t *p = &g->platforms[l->platform];
    const gen_product_t *pr = gen_prod(g, l);
    char *q;

    memset(ev, 0, sizeof *ev);
    q = gen_put_str(ev->event_id, p->id);
    *q++ = '-';
    q = gen_put_str(q, g->seedtag);
    *q++ = '-';
    *gen_put_u64(q, ++g->next_event_no) = '\0';
    ev->event_type = type;
    memcpy(ev->platform_id, p->id, sizeof p->id);
    memcpy(ev->lender_id, g->lenders[l->lender], sizeof g->lenders[0]);
    memcpy(ev->borrower_id, b->id, sizeof b->id);
    q = gen_put_str(ev->loan_id, pr->code);
    *q++ = '-';
    q = gen_put_str(q, g->seedtag);
    *q++ = '-';
    *gen_put_u64(q, l->loan_no) = '\0';
    ev->product = pr->type;
    ev->sequence = ++l->seq;
    ev->occurred_at = g->now;
    ev->amount_fen = amount;
    ev->outstanding_fen = l->outstanding;
    ev->credit_limit_fen = l->revolving ? l->limit : 0;
    ev->days_past_due = l->dpd;
    ev->past_due_fen = l->past_due;
    memcpy(ev->currency, "CNY", 4);
    if (b->has_income && (p->knows_income || b->kind == LW_GEN_INCOME)) {
        ev->has_annual_income = true;
        ev->annual_income_fen = b->income_fen;
    }
    if (!l->revolving) {
        ev->has_term_months = true;
        ev->term_months = l->term;
    }
}

/* Sometimes a platform reports a repayment with the wrong outstanding and
 * restates it later with a CORRECTION. */
static void gen_maybe_misreport(lw_gen_t *g, gen_loan_t *l, int64_t amount, lw_event_t *ev)
{
    if (l->outstanding > 0 && l->t_corr == GEN_NEVER && gen_chance(g, MISREPORT_BP)) {
        ev->outstanding_fen = l->outstanding + RMB(gen_range(g, 1, 2000));
        l->corr_amount = amount;
        l->t_corr = g->now + gen_range(g, 10 * MIN_MS, 2 * DAY_MS);
    }
}

/* ---- Choosing where to borrow ----------------------------------------------- */

static bool gen_lender_used(const gen_borrower_t *b, uint16_t li)
{
    return (b->lenders_used[li / 64] >> (li % 64)) & 1;
}

static int gen_lenders_used(const gen_borrower_t *b)
{
    return __builtin_popcountll(b->lenders_used[0]) + __builtin_popcountll(b->lenders_used[1]);
}

static uint8_t gen_pick_platform(lw_gen_t *g, const gen_borrower_t *b, bool distinct, bool need_big)
{
    uint8_t best = 0;
    int tries;
    for (tries = 0; tries < 12; tries++) {
        uint64_t r = gen_below(g, g->weight_total);
        uint8_t i;
        for (i = 0; i + 1u < g->nplatforms && r >= g->platforms[i].weight; i++)
            r -= g->platforms[i].weight;
        best = i;
        if (need_big) {
            const gen_platform_t *p = &g->platforms[i];
            uint8_t k;
            bool ok = false;
            for (k = 0; k < p->nproducts; k++)
                ok |= p->products[k].type == LW_PRODUCT_INSTALLMENT &&
                      p->products[k].max_fen >= RMB(200000);
            if (!ok)
                continue;
        }
        if (!distinct || !((b->platforms_used >> i) & 1))
            break;
    }
    return best;
}

static uint16_t gen_pick_lender(lw_gen_t *g, const gen_borrower_t *b, const gen_platform_t *p,
                                bool distinct)
{
    uint16_t li = p->own_lender;
    int tries;
    for (tries = 0; tries < 12; tries++) {
        if (p->npartners == 0 || gen_chance(g, p->own_pct * 100u))
            li = p->own_lender;
        else
            li = p->partners[gen_below(g, p->npartners)];
        if (!distinct || !gen_lender_used(b, li))
            break;
    }
    return li;
}

static uint8_t gen_pick_product(lw_gen_t *g, const gen_platform_t *p, bool instalment)
{
    uint8_t k;
    if (instalment) {
        for (k = 0; k < p->nproducts; k++)
            if (p->products[k].type == LW_PRODUCT_INSTALLMENT)
                return k;
        return 0;
    }
    return (uint8_t)gen_below(g, p->nproducts);
}

static int64_t gen_clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static int64_t gen_round100(int64_t fen)
{
    return fen / RMB(100) * RMB(100);
}

/* Amount asked for: principal (instalment) or credit limit (revolving). */
static int64_t gen_ask(lw_gen_t *g, const gen_borrower_t *b, const gen_product_t *pr, bool burst)
{
    int64_t lo = pr->min_fen, hi = pr->max_fen, v;
    int64_t u = (int64_t)gen_below(g, 1001);

    if (burst) {
        switch (b->kind) {
        case LW_GEN_STACKER:
            v = RMB(gen_range(g, 2000, 30000));
            break;
        case LW_GEN_INCOME:
            v = b->income_fen * gen_range(g, 30, 50) / 100;
            break;
        case LW_GEN_BIG:
            v = RMB(gen_range(g, 110000, 200000));
            break;
        default:
            v = RMB(gen_range(g, 2000, 20000));
            break;
        }
    } else {
        /* Mostly small amounts, a long tail up to the product maximum, and
         * within a quarter of income where the platform knows it. */
        v = lo + (hi - lo) * u * u / 1000000 * u / 1000;
        if (b->has_income && v > b->income_fen / 4)
            v = b->income_fen / 4;
    }
    return gen_clamp(gen_round100(v), lo, hi);
}

/* ---- Borrower actions ------------------------------------------------------- */

static void gen_plan_next_app(lw_gen_t *g, gen_borrower_t *b, bool approved)
{
    int64_t t;
    if (b->kind != LW_GEN_NORMAL && b->burst_left > 0) {
        switch (b->kind) {
        case LW_GEN_STACKER:
            t = gen_range(g, 10 * MIN_MS, 20 * HOUR_MS);
            break;
        case LW_GEN_DELINQUENT:
            t = gen_range(g, 5 * MIN_MS, 2 * HOUR_MS);
            break;
        default:
            t = gen_range(g, HOUR_MS, 3 * DAY_MS);
            break;
        }
        b->app_at = g->now + t;
        return;
    }
    if (!approved && gen_chance(g, 3500))
        b->app_at = g->now + gen_range(g, HOUR_MS, 10 * DAY_MS); /* try elsewhere */
    else if (b->nloans < 3 && gen_chance(g, 4000))
        b->app_at = g->now + DAY_MS + gen_exp(g, 90 * DAY_MS);
    else
        b->app_at = GEN_NEVER; /* until a loan ends */
}

static bool gen_apply(lw_gen_t *g, gen_borrower_t *b, uint32_t bi, lw_event_t *ev)
{
    bool burst = b->kind != LW_GEN_NORMAL && b->burst_left > 0;
    bool approved, instalment, big;
    const gen_platform_t *p;
    uint8_t pi;
    uint32_t li;
    gen_loan_t *l;

    if (!b->arrived) {
        char raw[19], err[160];
        gen_national_id(g, bi, raw);
        if (lw_id_pseudonymise(g->key, raw, b->id, err, sizeof err) != LW_OK) {
            snprintf(g->err, sizeof g->err, "borrower id: %s", err);
            return false;
        }
        b->arrived = true;
        g->stats.borrowers++;
        g->stats.over_borrowers[b->kind]++;
    }
    if (b->nloans >= GEN_MAX_LOANS) {
        b->app_at = g->now + 30 * DAY_MS;
        return false;
    }
    big = burst && b->kind == LW_GEN_BIG;
    instalment = burst && b->kind != LW_GEN_STACKER;
    pi = gen_pick_platform(g, b, burst, big);
    p = &g->platforms[pi];
    if ((li = gen_loan_alloc(g)) == GEN_NO_LOAN) {
        snprintf(g->err, sizeof g->err, "out of memory for loans");
        return false;
    }
    l = &g->loans[li];
    l->platform = pi;
    l->product = gen_pick_product(g, p, instalment);
    l->revolving = gen_prod(g, l)->type == LW_PRODUCT_REVOLVING;
    l->lender = gen_pick_lender(g, b, p, burst);
    l->principal = gen_ask(g, b, gen_prod(g, l), burst);
    l->apr_bp = (int32_t)gen_range(g, 720, 2400);
    if (!l->revolving) {
        const uint8_t *t = gen_prod(g, l)->terms;
        int nt = 0;
        while (t[nt])
            nt++;
        l->term = t[gen_below(g, (uint64_t)nt)];
    }
    /* Over-borrowers get their loans (that is the problem); the first four
     * of a stacking burst always, so four lenders are certainly active. */
    if (!burst)
        approved = !gen_chance(g, 2000);
    else if (b->kind == LW_GEN_STACKER && gen_lenders_used(b) >= 4)
        approved = !gen_chance(g, 1500);
    else
        approved = true;
    l->force_miss = burst && b->kind == LW_GEN_DELINQUENT && b->nloans == 0;

    gen_fill(g, b, l, LW_EVENT_APPLICATION, l->principal, ev);
    if (burst)
        b->burst_left--;
    if (approved) {
        b->loans[b->nloans++] = li;
        b->lenders_used[l->lender / 64] |= 1ULL << (l->lender % 64);
        b->platforms_used |= 1ULL << pi;
        l->aux_kind = GEN_AUX_OPEN;
        l->t_aux = g->now + (burst ? gen_range(g, MIN_MS, 30 * MIN_MS)
                                   : gen_range(g, 5 * MIN_MS, 2 * DAY_MS));
    } else {
        gen_loan_free(g, b, li);
    }
    gen_plan_next_app(g, b, approved);
    return true;
}

/* After a loan ended: an ordinary borrower may come back for another. */
static void gen_after_end(lw_gen_t *g, gen_borrower_t *b)
{
    if (b->app_at == GEN_NEVER && (b->nloans == 0 || gen_chance(g, 3000)))
        b->app_at = g->now + DAY_MS + gen_exp(g, 60 * DAY_MS);
}

static bool gen_open(lw_gen_t *g, gen_borrower_t *b, gen_loan_t *l, lw_event_t *ev)
{
    bool over = b->kind != LW_GEN_NORMAL;
    int first;

    l->t_aux = GEN_NEVER;
    if (l->force_miss)
        first = b->showcase ? 1 : (int)gen_range(g, 2, 4);
    else
        first = (int)gen_range(g, 10, 40);
    l->due0 = gen_due_date(g->now, first);
    l->k = 0;
    if (!l->revolving) {
        l->outstanding = l->principal;
        gen_fill(g, b, l, LW_EVENT_DRAWDOWN, l->principal, ev);
        gen_plan_due(g, b, l);
        return true;
    }
    /* Credit line: granted at 70-100% of the ask, then drawn on. */
    l->limit = gen_clamp(gen_round100(l->principal * gen_range(g, 70, 100) / 100), RMB(500),
                         gen_prod(g, l)->max_fen);
    gen_fill(g, b, l, LW_EVENT_CREDIT_LINE, 0, ev);
    l->due_kind = GEN_DUE_PAY;
    l->t_due = l->due0 + gen_range(g, 6 * HOUR_MS, 22 * HOUR_MS);
    l->aux_kind = GEN_AUX_DRAW;
    if (over)
        l->t_aux = g->now + gen_range(g, 10 * MIN_MS, 6 * HOUR_MS);
    else if (gen_chance(g, 7000))
        l->t_aux = g->now + gen_range(g, HOUR_MS, 10 * DAY_MS);
    else
        l->t_aux = g->now + gen_exp(g, 40 * DAY_MS);
    return true;
}

static bool gen_draw(lw_gen_t *g, gen_borrower_t *b, gen_loan_t *l, lw_event_t *ev)
{
    int64_t avail = l->limit - l->outstanding, amt;

    if (l->dpd > 0) { /* lines are frozen while past due */
        l->draw_frozen = true;
        l->t_aux = GEN_NEVER;
        return false;
    }
    if (gen_chance(g, 500) && l->seq > 2) { /* a limit review instead */
        int64_t nl;
        if (gen_chance(g, 7000))
            nl = l->limit * gen_range(g, 110, 150) / 100;
        else
            nl = l->limit * gen_range(g, 60, 90) / 100;
        nl = gen_clamp(gen_round100(nl), RMB(500), gen_prod(g, l)->max_fen);
        if (nl < l->outstanding)
            nl = gen_round100(l->outstanding + RMB(99));
        l->t_aux = g->now + gen_exp(g, 12 * DAY_MS) + MIN_MS;
        if (nl == l->limit)
            return false;
        l->limit = nl;
        gen_fill(g, b, l, LW_EVENT_CREDIT_LINE, 0, ev);
        return true;
    }
    l->t_aux = g->now + gen_exp(g, 12 * DAY_MS) + MIN_MS;
    if (avail < RMB(100))
        return false;
    if (b->kind != LW_GEN_NORMAL && l->seq == 2)
        amt = avail * gen_range(g, 50, 95) / 100; /* over-borrowers draw big at once */
    else {
        int64_t u = (int64_t)gen_below(g, 1001);
        amt = RMB(1) + (avail - RMB(1)) * u / 1000 * u / 1000;
    }
    l->outstanding += amt;
    gen_fill(g, b, l, LW_EVENT_DRAWDOWN, amt, ev);
    return true;
}

static bool gen_pay(lw_gen_t *g, gen_borrower_t *b, gen_loan_t *l, lw_event_t *ev)
{
    int64_t part, interest, amount;

    if (l->revolving) {
        if (l->outstanding == 0) { /* nothing on the statement */
            l->idle++;
            l->k++;
            if (l->idle >= 3 && l->aux_kind != GEN_AUX_CLOSE && gen_chance(g, 1500)) {
                l->t_due = GEN_NEVER;
                l->aux_kind = GEN_AUX_CLOSE;
                l->t_aux = g->now + gen_range(g, HOUR_MS, 5 * DAY_MS);
            } else {
                l->t_due = gen_due(l, l->k) + gen_range(g, 6 * HOUR_MS, 22 * HOUR_MS);
            }
            return false;
        }
        l->idle = 0;
        if ((l->force_miss && l->k == 0) || gen_chance(g, gen_miss_bp(b))) {
            int64_t tenth = l->outstanding / 10;
            l->minpay =
                tenth > RMB(100) ? tenth : (l->outstanding < RMB(100) ? l->outstanding : RMB(100));
            l->miss_k = l->k;
            l->dq_step = 0;
            l->due_kind = GEN_DUE_DQ;
            l->t_due = gen_due(l, l->k) + DAY_MS + gen_range(g, 0, 8 * HOUR_MS);
            return false;
        }
        if (gen_chance(g, 7500)) { /* statement paid in full, interest-free */
            part = l->outstanding;
            interest = 0;
        } else {
            part = gen_range(g, l->outstanding / 10, l->outstanding / 2);
            if (part < 1)
                part = 1;
            interest = l->outstanding * l->apr_bp / 120000;
        }
        l->outstanding -= part;
        l->k++;
        amount = part + interest;
        gen_fill(g, b, l, LW_EVENT_REPAYMENT, amount, ev);
        gen_maybe_misreport(g, l, amount, ev);
        l->t_due = gen_due(l, l->k) + gen_range(g, 6 * HOUR_MS, 22 * HOUR_MS);
        return true;
    }
    part = l->k >= l->term - 1 ? l->outstanding : gen_part(l, l->k);
    if (part > l->outstanding)
        part = l->outstanding;
    interest = l->outstanding * l->apr_bp / 120000;
    l->outstanding -= part;
    l->k++;
    amount = part + interest;
    gen_fill(g, b, l, LW_EVENT_REPAYMENT, amount, ev);
    if (l->outstanding == 0) {
        l->t_due = GEN_NEVER;
        l->aux_kind = GEN_AUX_CLOSE;
        l->t_aux = g->now + gen_range(g, SEC_MS, 10 * MIN_MS);
        return true;
    }
    gen_maybe_misreport(g, l, amount, ev);
    gen_plan_due(g, b, l);
    /* Some pay the whole loan off early, before the next instalment. */
    if (l->t_aux == GEN_NEVER && l->due_kind == GEN_DUE_PAY && gen_chance(g, 150)) {
        int64_t next = gen_due(l, l->k);
        if (next - g->now > 2 * DAY_MS) {
            l->aux_kind = GEN_AUX_PAYOFF;
            l->t_aux = g->now + gen_range(g, DAY_MS, next - g->now - DAY_MS);
        }
    }
    return true;
}

static bool gen_delinquency(lw_gen_t *g, gen_borrower_t *b, gen_loan_t *l, lw_event_t *ev)
{
    int step = l->dq_step, missed = gen_missed(l, g->now);
    int64_t first_due = gen_due(l, l->miss_k), next_t, cure_lo;

    l->dpd = gen_dpd_ladder[step];
    l->past_due = gen_past_due(l, missed);
    if (l->past_due <= 0)
        l->past_due = 1; /* outstanding below a fen cannot happen; keep it > 0 */
    gen_fill(g, b, l, LW_EVENT_DELINQUENCY, l->past_due, ev);

    next_t = first_due + (step + 1 < DQ_STEPS ? gen_dpd_ladder[step + 1] : 180) * DAY_MS +
             gen_range(g, 0, 8 * HOUR_MS);
    cure_lo = g->now + HOUR_MS;
    if (l->force_miss && step == 0) {
        /* The delinquent over-borrower goes for fresh credit elsewhere now. */
        b->burst_left = (uint8_t)gen_range(g, 1, 2);
        int64_t t = g->now + (b->showcase ? gen_range(g, HOUR_MS, 6 * HOUR_MS)
                                          : gen_range(g, 2 * HOUR_MS, 36 * HOUR_MS));
        if (t < b->app_at)
            b->app_at = t;
        cure_lo = g->now + 8 * DAY_MS;
    }
    if (gen_chance(g, gen_cure_bp[step]) && cure_lo < next_t - DAY_MS) {
        l->due_kind = GEN_DUE_CURE;
        l->t_due = gen_range(g, cure_lo, next_t - DAY_MS);
    } else if (step + 1 < DQ_STEPS) {
        l->dq_step++;
        l->t_due = next_t;
    } else {
        l->due_kind = GEN_DUE_WOFF;
        l->t_due = next_t;
    }
    return true;
}

static bool gen_cure(lw_gen_t *g, gen_borrower_t *b, gen_loan_t *l, lw_event_t *ev)
{
    int missed = gen_missed(l, g->now);
    int64_t principal = gen_past_due(l, missed);
    int64_t days = (g->now - gen_due(l, l->miss_k)) / DAY_MS;
    int64_t fee = principal * days * 5 / 10000; /* 0.05% a day late fee */

    l->outstanding -= principal;
    l->dpd = 0;
    l->past_due = 0;
    l->k = (uint16_t)(l->miss_k + missed);
    gen_fill(g, b, l, LW_EVENT_REPAYMENT, principal + fee, ev);
    if (l->outstanding == 0) {
        l->t_due = GEN_NEVER;
        l->aux_kind = GEN_AUX_CLOSE;
        l->t_aux = g->now + gen_range(g, SEC_MS, 10 * MIN_MS);
        return true;
    }
    if (l->revolving) {
        l->due_kind = GEN_DUE_PAY;
        l->t_due = gen_due(l, l->k) + gen_range(g, 6 * HOUR_MS, 22 * HOUR_MS);
        if (l->t_due < g->now)
            l->t_due = g->now;
        if (l->draw_frozen) {
            l->draw_frozen = false;
            l->aux_kind = GEN_AUX_DRAW;
            l->t_aux = g->now + gen_range(g, DAY_MS, 20 * DAY_MS);
        }
    } else {
        gen_plan_due(g, b, l);
    }
    return true;
}

static bool gen_write_off(lw_gen_t *g, gen_borrower_t *b, uint32_t li, lw_event_t *ev)
{
    gen_loan_t *l = &g->loans[li];
    int64_t amount = l->outstanding;

    l->outstanding = 0;
    l->past_due = 0;
    l->limit = 0;
    l->dpd = 180;
    gen_fill(g, b, l, LW_EVENT_WRITE_OFF, amount, ev);
    gen_loan_free(g, b, li);
    gen_after_end(g, b);
    return true;
}

static bool gen_close(lw_gen_t *g, gen_borrower_t *b, uint32_t li, lw_event_t *ev)
{
    gen_loan_t *l = &g->loans[li];
    l->limit = 0;
    l->dpd = 0;
    l->past_due = 0;
    gen_fill(g, b, l, LW_EVENT_CLOSURE, 0, ev);
    gen_loan_free(g, b, li);
    gen_after_end(g, b);
    return true;
}

static bool gen_payoff(lw_gen_t *g, gen_borrower_t *b, gen_loan_t *l, lw_event_t *ev)
{
    int64_t amount = l->outstanding + l->outstanding * l->apr_bp / 240000;
    l->outstanding = 0;
    l->t_due = GEN_NEVER;
    gen_fill(g, b, l, LW_EVENT_REPAYMENT, amount, ev);
    l->aux_kind = GEN_AUX_CLOSE;
    l->t_aux = g->now + gen_range(g, SEC_MS, 10 * MIN_MS);
    return true;
}

static bool gen_correct(lw_gen_t *g, gen_borrower_t *b, gen_loan_t *l, lw_event_t *ev)
{
    l->t_corr = GEN_NEVER;
    gen_fill(g, b, l, LW_EVENT_CORRECTION, l->corr_amount, ev);
    return true;
}

enum { GEN_T_CORR = 0, GEN_T_DUE, GEN_T_AUX };

/* Runs the borrower's earliest action; true when it produced an event. */
static bool gen_step(lw_gen_t *g, uint32_t bi, lw_event_t *ev)
{
    gen_borrower_t *b = &g->borrowers[bi];
    int slot = b->next_slot, timer = b->next_timer;
    uint32_t li;
    gen_loan_t *l;

    if (slot < 0)
        return gen_apply(g, b, bi, ev);
    li = b->loans[slot];
    l = &g->loans[li];
    /* A pending correction goes out before the loan's last word. */
    if (l->t_corr != GEN_NEVER && timer != GEN_T_CORR &&
        ((timer == GEN_T_AUX && (l->aux_kind == GEN_AUX_CLOSE || l->aux_kind == GEN_AUX_PAYOFF)) ||
         (timer == GEN_T_DUE && l->due_kind == GEN_DUE_WOFF)))
        timer = GEN_T_CORR;
    switch (timer) {
    case GEN_T_CORR:
        return gen_correct(g, b, l, ev);
    case GEN_T_DUE:
        switch (l->due_kind) {
        case GEN_DUE_PAY:
            return gen_pay(g, b, l, ev);
        case GEN_DUE_DQ:
            return gen_delinquency(g, b, l, ev);
        case GEN_DUE_CURE:
            return gen_cure(g, b, l, ev);
        default:
            return gen_write_off(g, b, li, ev);
        }
    default:
        switch (l->aux_kind) {
        case GEN_AUX_OPEN:
            return gen_open(g, b, l, ev);
        case GEN_AUX_DRAW:
            return gen_draw(g, b, l, ev);
        case GEN_AUX_PAYOFF:
            return gen_payoff(g, b, l, ev);
        default:
            return gen_close(g, b, li, ev);
        }
    }
}

/* The borrower's earliest pending action (ties: correction, due, auxiliary,
 * by slot; the application last), remembered for the next gen_step(). */
static int64_t gen_borrower_next(const lw_gen_t *g, gen_borrower_t *b)
{
    int64_t t = b->app_at;
    uint8_t s;
    b->next_slot = -1;
    b->next_timer = 0;
    for (s = 0; s < b->nloans; s++) {
        const gen_loan_t *l = &g->loans[b->loans[s]];
        if (l->t_corr < t) {
            t = l->t_corr;
            b->next_slot = (int8_t)s;
            b->next_timer = GEN_T_CORR;
        }
        if (l->t_due < t) {
            t = l->t_due;
            b->next_slot = (int8_t)s;
            b->next_timer = GEN_T_DUE;
        }
        if (l->t_aux < t) {
            t = l->t_aux;
            b->next_slot = (int8_t)s;
            b->next_timer = GEN_T_AUX;
        }
    }
    return t;
}

bool lw_gen_next(lw_gen_t *g, lw_event_t *out)
{
    if (!g || !out || g->err[0])
        return false;
    if (g->conf.max_events && g->stats.events >= g->conf.max_events)
        return false;
    for (;;) {
        uint32_t bi = g->heap[0].idx;
        gen_borrower_t *b = &g->borrowers[bi];
        bool emitted;
        int64_t t;

        if (g->heap[0].at > g->now)
            g->now = g->heap[0].at;
        emitted = gen_step(g, bi, out);
        if (g->err[0])
            return false;
        t = gen_borrower_next(g, b);
        if (t == GEN_NEVER) { /* nothing pending: a new application, later */
            b->app_at = g->now + DAY_MS + gen_exp(g, 60 * DAY_MS);
            t = b->app_at;
            b->next_slot = -1;
        }
        g->heap[0].at = t < g->now ? g->now : t;
        gen_sift_down(g->heap, g->nborrowers, 0);
        if (emitted) {
            g->stats.events++;
            g->stats.by_type[out->event_type]++;
            g->stats.sim_now_ms = out->occurred_at;
            return true;
        }
    }
}
