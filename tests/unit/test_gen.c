/*
 * test_gen.c - unit tests of the synthetic feed (producers/gen/gen.h).
 *
 * Determinism (same seed, same JSON; another seed, another feed), validity
 * of every event, the sequence and event-time rules, and the over-borrowing
 * patterns the bureau rules must catch. The patterns are found by a small
 * model of borrower exposure built here from the events alone, not from the
 * generator's internals, so the test checks what a consumer would see.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gen.h"
#include "loanwire/json.h"
#include "loanwire/validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RMB(x)  ((int64_t)(x)*100)
#define DAY_MS  86400000LL
#define WEEK_MS (7 * DAY_MS)

/* ---- A string -> index map (open addressing) ------------------------------ */

typedef struct smap {
    char **keys;
    int *vals;
    size_t cap, n;
} smap_t;

static uint64_t fnv1a(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    while (n--)
        h = (h ^ *s++) * 0x100000001b3ULL;
    return h;
}

static void smap_grow(smap_t *m);

static int *smap_slot(smap_t *m, const char *key, bool *found)
{
    size_t i;
    if ((m->n + 1) * 2 > m->cap)
        smap_grow(m);
    i = fnv1a(key, strlen(key), 0xcbf29ce484222325ULL) & (m->cap - 1);
    while (m->keys[i]) {
        if (!strcmp(m->keys[i], key)) {
            *found = true;
            return &m->vals[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
    *found = false;
    m->keys[i] = strdup(key);
    assert_non_null(m->keys[i]);
    m->n++;
    return &m->vals[i];
}

static void smap_grow(smap_t *m)
{
    smap_t nm = {0};
    size_t i;
    nm.cap = m->cap ? m->cap * 2 : 1024;
    nm.keys = calloc(nm.cap, sizeof *nm.keys);
    nm.vals = calloc(nm.cap, sizeof *nm.vals);
    assert_non_null(nm.keys);
    assert_non_null(nm.vals);
    for (i = 0; i < m->cap; i++)
        if (m->keys[i]) {
            size_t j = fnv1a(m->keys[i], strlen(m->keys[i]), 0xcbf29ce484222325ULL) & (nm.cap - 1);
            while (nm.keys[j])
                j = (j + 1) & (nm.cap - 1);
            nm.keys[j] = m->keys[i];
            nm.vals[j] = m->vals[i];
            nm.n++;
        }
    free(m->keys);
    free(m->vals);
    *m = nm;
}

static void smap_free(smap_t *m)
{
    size_t i;
    for (i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- Helpers ---------------------------------------------------------------- */

static lw_gen_t *new_gen(uint64_t seed, uint64_t events)
{
    lw_gen_conf_t conf;
    char errstr[256] = "";
    lw_gen_t *g;
    lw_gen_conf_init(&conf);
    conf.seed = seed;
    conf.max_events = events;
    g = lw_gen_new(&conf, errstr, sizeof errstr);
    if (!g)
        fail_msg("lw_gen_new: %s", errstr);
    return g;
}

static uint64_t feed_hash(uint64_t seed, uint64_t events)
{
    lw_gen_t *g = new_gen(seed, events);
    lw_event_t ev;
    char buf[2048];
    uint64_t h = 0xcbf29ce484222325ULL, n = 0;
    while (lw_gen_next(g, &ev)) {
        int len = lw_event_to_json(&ev, buf, sizeof buf);
        assert_true(len > 0);
        h = fnv1a(buf, (size_t)len, h);
        h = fnv1a("\n", 1, h);
        n++;
    }
    assert_string_equal(lw_gen_error(g), "");
    assert_int_equal(n, events);
    lw_gen_destroy(g);
    return h;
}

/* ---- Tests -------------------------------------------------------------------- */

static void test_same_seed_same_feed(void **state)
{
    (void)state;
    uint64_t a = feed_hash(42, 100000), b = feed_hash(42, 100000), c = feed_hash(43, 100000);
    assert_true(a == b);
    assert_true(a != c);
}

static void test_bounds_and_conf(void **state)
{
    (void)state;
    lw_gen_conf_t conf;
    lw_gen_t *g;
    lw_event_t ev;
    char errstr[256];
    int n = 0;

    g = new_gen(1, 10);
    while (lw_gen_next(g, &ev))
        n++;
    assert_int_equal(n, 10);
    assert_false(lw_gen_next(g, &ev));
    lw_gen_destroy(g);
    lw_gen_destroy(NULL);

    lw_gen_conf_init(&conf);
    conf.borrowers = 0;
    errstr[0] = '\0';
    assert_null(lw_gen_new(&conf, errstr, sizeof errstr));
    assert_non_null(strstr(errstr, "borrowers"));
    lw_gen_conf_init(&conf);
    conf.platforms = LW_GEN_MAX_PLATFORMS + 1;
    assert_null(lw_gen_new(&conf, errstr, sizeof errstr));
    assert_non_null(strstr(errstr, "platforms"));
    lw_gen_conf_init(&conf);
    conf.over_borrowers_bp = 10001;
    assert_null(lw_gen_new(&conf, errstr, sizeof errstr));

    /* A tiny population and one platform still make a valid feed. */
    lw_gen_conf_init(&conf);
    conf.borrowers = 3;
    conf.platforms = 1;
    conf.max_events = 2000;
    g = lw_gen_new(&conf, errstr, sizeof errstr);
    assert_non_null(g);
    n = 0;
    while (lw_gen_next(g, &ev)) {
        lw_field_error_t fe;
        /* valid at its own event time: a tiny population's simulated clock
         * runs years ahead of the wall clock the producer checks against */
        if (lw_event_validate_at(&ev, ev.occurred_at, &fe) != LW_OK)
            fail_msg("event %d invalid: %s: %s", n, fe.field, fe.reason);
        assert_string_equal(ev.platform_id, "ALIPAY");
        n++;
    }
    assert_int_equal(n, 2000);
    lw_gen_destroy(g);

    /* Many platforms: synthetic micro-lenders beyond the real ten. */
    lw_gen_conf_init(&conf);
    conf.platforms = 20;
    g = lw_gen_new(&conf, errstr, sizeof errstr);
    assert_non_null(g);
    assert_string_equal(lw_gen_platform_name(g, 0), "ALIPAY");
    assert_string_equal(lw_gen_platform_name(g, 19), "MLENDER-20");
    assert_null(lw_gen_platform_name(g, 20));
    lw_gen_destroy(g);
}

static void test_parse_time(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(lw_gen_parse_time("2026-01-01", &ms), LW_OK);
    assert_true(ms == LW_GEN_DEFAULT_START);
    assert_int_equal(lw_gen_parse_time("2026-01-01T00:00:00Z", &ms), LW_OK);
    assert_true(ms == LW_GEN_DEFAULT_START);
    assert_int_equal(lw_gen_parse_time("2026-03-01T08:30:15.250Z", &ms), LW_OK);
    assert_true(ms == 1772353815250LL);
    assert_int_equal(lw_gen_parse_time("1767225600000", &ms), LW_OK);
    assert_true(ms == LW_GEN_DEFAULT_START);
    assert_int_equal(lw_gen_parse_time("2026-02-30", &ms), LW_ERR_INVALID_ARG);
    assert_int_equal(lw_gen_parse_time("2026-1-1", &ms), LW_ERR_INVALID_ARG);
    assert_int_equal(lw_gen_parse_time("2026-01-01T25:00:00Z", &ms), LW_ERR_INVALID_ARG);
    assert_int_equal(lw_gen_parse_time("yesterday", &ms), LW_ERR_INVALID_ARG);
    assert_int_equal(lw_gen_parse_time("", &ms), LW_ERR_INVALID_ARG);
}

/* Every event valid; per loan the sequence strictly increases; per borrower
 * the event time never goes back; every event type shows up. */
static void test_valid_and_ordered(void **state)
{
    (void)state;
    enum { N = 200000 };
    lw_gen_t *g = new_gen(7, N);
    smap_t loans = {0}, borrowers = {0}, event_ids = {0};
    int64_t *loan_seq = calloc(N, sizeof *loan_seq), *b_time = calloc(N, sizeof *b_time);
    uint64_t by_type[LW_EVENT__CNT] = {0};
    lw_event_t ev;
    char key[160];
    int n = 0, nloan = 0, nb = 0, t;

    assert_non_null(loan_seq);
    assert_non_null(b_time);
    while (lw_gen_next(g, &ev)) {
        lw_field_error_t fe;
        bool found;
        int *slot;

        if (lw_event_validate(&ev, &fe) != LW_OK)
            fail_msg("event %d (%s) invalid: %s: %s", n, ev.event_id, fe.field, fe.reason);
        by_type[ev.event_type]++;

        slot = smap_slot(&event_ids, ev.event_id, &found);
        if (found)
            fail_msg("event_id %s repeated", ev.event_id);
        *slot = n;

        snprintf(key, sizeof key, "%s|%s", ev.platform_id, ev.loan_id);
        slot = smap_slot(&loans, key, &found);
        if (!found) {
            *slot = nloan++;
            loan_seq[*slot] = 0;
        }
        if (ev.sequence <= loan_seq[*slot])
            fail_msg("loan %s: sequence %lld after %lld", key, (long long)ev.sequence,
                     (long long)loan_seq[*slot]);
        loan_seq[*slot] = ev.sequence;

        slot = smap_slot(&borrowers, ev.borrower_id, &found);
        if (!found) {
            *slot = nb++;
            b_time[*slot] = 0;
        }
        if (ev.occurred_at < b_time[*slot])
            fail_msg("borrower %s: event time %lld before %lld", ev.borrower_id,
                     (long long)ev.occurred_at, (long long)b_time[*slot]);
        b_time[*slot] = ev.occurred_at;
        n++;
    }
    assert_int_equal(n, N);
    for (t = 0; t < LW_EVENT__CNT; t++)
        if (by_type[t] == 0)
            fail_msg("no %s event in %d", lw_event_type_name((lw_event_type_t)t), N);
    assert_true(nb > 1000);
    smap_free(&loans);
    smap_free(&borrowers);
    smap_free(&event_ids);
    free(loan_seq);
    free(b_time);
    lw_gen_destroy(g);
}

/* ---- The over-borrowing model ------------------------------------------------ */

typedef struct m_loan {
    int borrower;
    char lender[LW_ID_MAX + 1];
    int64_t outstanding;
    int32_t dpd;
    bool ended;
} m_loan_t;

typedef struct m_app {
    int64_t at;
    char lender[LW_ID_MAX + 1];
} m_app_t;

typedef struct m_borrower {
    int *loans;
    int nloans, cap;
    m_app_t apps[32]; /* ring of the latest applications */
    int napps;
    bool has_income;
    int64_t income;
} m_borrower_t;

typedef struct m_found {
    int64_t multi_lender, stacking, income_cap, abs_cap, while_delinquent;
} m_found_t;

static int m_active_lenders(const m_borrower_t *b, const m_loan_t *loans)
{
    const char *seen[64];
    int ns = 0, i, j;
    for (i = 0; i < b->nloans; i++) {
        const m_loan_t *l = &loans[b->loans[i]];
        if (l->ended || l->outstanding <= 0)
            continue;
        for (j = 0; j < ns && strcmp(seen[j], l->lender); j++)
            ;
        if (j == ns && ns < 64)
            seen[ns++] = l->lender;
    }
    return ns;
}

static int64_t m_total(const m_borrower_t *b, const m_loan_t *loans)
{
    int64_t t = 0;
    int i;
    for (i = 0; i < b->nloans; i++)
        if (!loans[b->loans[i]].ended)
            t += loans[b->loans[i]].outstanding;
    return t;
}

/* Applications in the 7 days up to `now`, and how many distinct lenders. */
static void m_window(const m_borrower_t *b, int64_t now, int *count, int *lenders)
{
    const char *seen[32];
    int ns = 0, i, j, n = b->napps < 32 ? b->napps : 32;
    *count = 0;
    for (i = 0; i < n; i++) {
        const m_app_t *a = &b->apps[(b->napps - 1 - i) % 32];
        if (now - a->at > WEEK_MS)
            continue;
        (*count)++;
        for (j = 0; j < ns && strcmp(seen[j], a->lender); j++)
            ;
        if (j == ns)
            seen[ns++] = a->lender;
    }
    *lenders = ns;
}

/* Runs the model over the feed conf describes; records the first event
 * index at which each pattern shows (-1: never). The thresholds are
 * the exposure rules' defaults: income cap min(RMB 300,000, income / 3),
 * >= 4 distinct active lenders, >= 5 distinct lenders among applications in
 * 7 days, a drawdown while another loan has days_past_due > 0. */
static void m_run(const lw_gen_conf_t *conf, m_found_t *f)
{
    char errstr[256] = "";
    int events = (int)conf->max_events;
    lw_gen_t *g = lw_gen_new(conf, errstr, sizeof errstr);
    smap_t lmap = {0}, bmap = {0};
    m_loan_t *loans = calloc((size_t)events, sizeof *loans);
    m_borrower_t *bs = calloc((size_t)events, sizeof *bs);
    lw_event_t ev;
    char key[160];
    int n = 0, nl = 0, nb = 0, i;

    if (!g)
        fail_msg("lw_gen_new: %s", errstr);
    assert_non_null(loans);
    assert_non_null(bs);
    f->multi_lender = f->stacking = f->income_cap = f->abs_cap = f->while_delinquent = -1;
    while (lw_gen_next(g, &ev)) {
        bool found;
        int *slot, bi, li;
        m_borrower_t *b;
        m_loan_t *l;

        slot = smap_slot(&bmap, ev.borrower_id, &found);
        if (!found)
            *slot = nb++;
        bi = *slot;
        b = &bs[bi];
        if (ev.has_annual_income) {
            b->has_income = true;
            b->income = ev.annual_income_fen;
        }
        snprintf(key, sizeof key, "%s|%s", ev.platform_id, ev.loan_id);
        slot = smap_slot(&lmap, key, &found);
        if (!found) {
            *slot = nl++;
            loans[*slot].borrower = bi;
            if (b->nloans == b->cap) {
                b->cap = b->cap ? b->cap * 2 : 8;
                b->loans = realloc(b->loans, (size_t)b->cap * sizeof *b->loans);
                assert_non_null(b->loans);
            }
            b->loans[b->nloans++] = *slot;
        }
        li = *slot;
        l = &loans[li];
        snprintf(l->lender, sizeof l->lender, "%s", ev.lender_id);

        /* borrow_while_delinquent: a drawdown while another loan is past due. */
        if (ev.event_type == LW_EVENT_DRAWDOWN && f->while_delinquent < 0)
            for (i = 0; i < b->nloans; i++) {
                const m_loan_t *o = &loans[b->loans[i]];
                if (b->loans[i] != li && !o->ended && o->dpd > 0) {
                    f->while_delinquent = n;
                    break;
                }
            }
        l->outstanding = ev.outstanding_fen;
        l->dpd = ev.days_past_due;
        l->ended = ev.event_type == LW_EVENT_CLOSURE || ev.event_type == LW_EVENT_WRITE_OFF;
        if (ev.event_type == LW_EVENT_APPLICATION) {
            m_app_t *a = &b->apps[b->napps++ % 32];
            a->at = ev.occurred_at;
            snprintf(a->lender, sizeof a->lender, "%s", ev.lender_id);
            if (f->stacking < 0) {
                int c, dl;
                m_window(b, ev.occurred_at, &c, &dl);
                if (c >= 5 && dl >= 5)
                    f->stacking = n;
            }
        }
        if (f->multi_lender < 0 && m_active_lenders(b, loans) >= 4)
            f->multi_lender = n;
        {
            int64_t total = m_total(b, loans);
            if (f->abs_cap < 0 && total > RMB(300000))
                f->abs_cap = n;
            /* The income cap proper: a third of income, below RMB 300,000. */
            if (f->income_cap < 0 && b->has_income && b->income / 3 < RMB(300000) &&
                total > b->income / 3)
                f->income_cap = n;
        }
        n++;
    }
    assert_int_equal(n, events);
    for (i = 0; i < nb; i++)
        free(bs[i].loans);
    free(bs);
    free(loans);
    smap_free(&lmap);
    smap_free(&bmap);
    lw_gen_destroy(g);
}

static void test_over_borrowing_patterns(void **state)
{
    (void)state;
    uint64_t seeds[] = {1, 2, 99};
    size_t s;
    for (s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        m_found_t f;
        lw_gen_conf_t conf;
        lw_gen_conf_init(&conf);
        conf.seed = seeds[s];
        /* 20,000 events: about 20 s of a 1,000 events/s demo. */
        conf.max_events = 20000;
        m_run(&conf, &f);
        print_message("seed %llu: multi_lender@%lld stacking@%lld income_cap@%lld "
                      "abs_cap@%lld while_delinquent@%lld\n",
                      (unsigned long long)seeds[s], (long long)f.multi_lender,
                      (long long)f.stacking, (long long)f.income_cap, (long long)f.abs_cap,
                      (long long)f.while_delinquent);
        assert_true(f.multi_lender >= 0);
        assert_true(f.stacking >= 0);
        assert_true(f.income_cap >= 0);
        assert_true(f.abs_cap >= 0);
        assert_true(f.while_delinquent >= 0);
    }
}

/* With no over-borrowers, stacking and multi-lender borrowing do not turn up
 * early: it is the over-borrowers that make them, not chance. (Ordinary
 * borrowers may well draw on a line while another loan is a few days late;
 * that is realistic and not asserted either way.) */
static void test_no_over_borrowers_no_patterns(void **state)
{
    (void)state;
    lw_gen_conf_t conf;
    m_found_t f;

    lw_gen_conf_init(&conf);
    conf.over_borrowers_bp = 0;
    conf.max_events = 20000;
    m_run(&conf, &f);
    assert_true(f.stacking < 0);
    assert_true(f.multi_lender < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_bounds_and_conf),
        cmocka_unit_test(test_same_seed_same_feed),
        cmocka_unit_test(test_valid_and_ordered),
        cmocka_unit_test(test_over_borrowing_patterns),
        cmocka_unit_test(test_no_over_borrowers_no_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
