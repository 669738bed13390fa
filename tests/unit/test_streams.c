/*
 * test_streams.c - the merge of the alert streams (consumers/state/src/streams.c)
 * without a server: in-memory streams answer the pages the engine asks for
 * exactly as XRANGE / XREVRANGE with COUNT would, and every answer is checked
 * against a sort of all entries by (id, stream). Also the cost the README
 * quotes (rounds and pages for the newest 100 of alerts spread over 16384
 * streams, and of one hot stream), following with a bound and new entries
 * between polls, entry id parsing, and that stream i's key lives in slot i.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/streams.h"
#include "rcluster_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct mstream {
    lw_sid_t *ids;
    size_t n, cap;
} mstream_t;

typedef struct world {
    mstream_t *s;
    size_t ns;
    bool reverse;
} world_t;

static void add(world_t *w, size_t s, uint64_t ms, uint64_t seq)
{
    mstream_t *m = &w->s[s];
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 8;
        m->ids = realloc(m->ids, m->cap * sizeof *m->ids);
        assert_non_null(m->ids);
    }
    /* a stream only grows: ids strictly increase */
    if (m->n)
        assert_true(lw_sid_cmp(m->ids[m->n - 1], (lw_sid_t){ms, seq}) < 0);
    m->ids[m->n++] = (lw_sid_t){ms, seq};
}

static world_t *world_new(size_t ns, bool reverse)
{
    world_t *w = calloc(1, sizeof *w);
    w->s = calloc(ns, sizeof *w->s);
    w->ns = ns;
    w->reverse = reverse;
    return w;
}

static void world_free(world_t *w)
{
    for (size_t i = 0; i < w->ns; i++)
        free(w->s[i].ids);
    free(w->s);
    free(w);
}

/* XRANGE / XREVRANGE of one in-memory stream. Payload: a pointer to the id. */
static lw_err_t fetch(void *opaque, lw_smerge_t *m, const lw_smerge_req_t *reqs, size_t n,
                      char *errstr, size_t errstr_size)
{
    world_t *w = opaque;
    (void)errstr;
    (void)errstr_size;
    for (size_t i = 0; i < n; i++) {
        const mstream_t *s = &w->s[reqs[i].stream];
        size_t got = 0;
        for (size_t k = 0; k < s->n && got < reqs[i].count; k++) {
            size_t j = w->reverse ? s->n - 1 - k : k;
            int c = lw_sid_cmp(s->ids[j], reqs[i].from);
            bool ok = reqs[i].mode == LW_SFROM_OPEN ||
                      (reqs[i].mode == LW_SFROM_INCL ? (w->reverse ? c <= 0 : c >= 0)
                                                     : (w->reverse ? c < 0 : c > 0));
            if (!ok)
                continue;
            assert_true(lw_smerge_put(m, i, s->ids[j], &s->ids[j]));
            got++;
        }
    }
    return LW_OK;
}

typedef struct ent {
    lw_sid_t id;
    size_t s;
} ent_t;

static bool g_rev;
static int ent_cmp(const void *a, const void *b)
{
    const ent_t *x = a, *y = b;
    int c = lw_sid_cmp(x->id, y->id);
    if (c == 0)
        c = x->s < y->s ? -1 : x->s > y->s;
    return g_rev ? -c : c; /* newest first is the same order backwards */
}

/* Every entry of w (from the start point), in the order the merge must give. */
static ent_t *expected(const world_t *w, lw_sfrom_t mode, lw_sid_t from, size_t *n)
{
    size_t tot = 0;
    for (size_t i = 0; i < w->ns; i++)
        tot += w->s[i].n;
    ent_t *e = calloc(tot ? tot : 1, sizeof *e);
    *n = 0;
    for (size_t i = 0; i < w->ns; i++)
        for (size_t k = 0; k < w->s[i].n; k++) {
            int c = lw_sid_cmp(w->s[i].ids[k], from);
            if (mode == LW_SFROM_INCL && (w->reverse ? c > 0 : c < 0))
                continue;
            if (mode == LW_SFROM_AFTER && (w->reverse ? c >= 0 : c <= 0))
                continue;
            e[(*n)++] = (ent_t){w->s[i].ids[k], i};
        }
    g_rev = w->reverse;
    qsort(e, *n, sizeof *e, ent_cmp);
    return e;
}

/* Takes up to limit entries and checks them against the sorted truth. */
static void check_merge(world_t *w, lw_sfrom_t mode, lw_sid_t from, size_t limit, size_t first_page,
                        size_t *rounds, size_t *pages)
{
    lw_smerge_t *m = lw_smerge_new(w->ns, w->reverse, fetch, w);
    assert_non_null(m);
    lw_smerge_start(m, mode, from);
    lw_smerge_first_page(m, first_page);
    size_t ne;
    ent_t *e = expected(w, mode, from, &ne);
    size_t want = limit < ne ? limit : ne, got = 0;
    char errstr[128];
    for (;;) {
        lw_smerge_hint(m, limit - got);
        lw_sid_t id;
        size_t s;
        const void *p;
        bool end;
        if (got == limit)
            break;
        assert_int_equal(lw_smerge_next(m, NULL, &id, &s, &p, &end, errstr, sizeof errstr), LW_OK);
        if (end)
            break;
        assert_true(got < ne);
        assert_int_equal(lw_sid_cmp(id, e[got].id), 0);
        assert_int_equal(s, e[got].s);
        assert_int_equal(lw_sid_cmp(*(const lw_sid_t *)p, id), 0);
        got++;
    }
    assert_int_equal(got, want);
    if (rounds)
        *rounds = lw_smerge_rounds(m);
    if (pages)
        *pages = lw_smerge_pages(m);
    free(e);
    lw_smerge_destroy(m);
}

static void test_sid_parse(void **state)
{
    (void)state;
    lw_sid_t id;
    assert_true(lw_sid_parse("1700000000000-0", 15, &id));
    assert_true(id.ms == 1700000000000ULL && id.seq == 0);
    assert_true(lw_sid_parse("0-18446744073", 13, &id));
    assert_true(id.seq == 18446744073ULL);
    assert_false(lw_sid_parse("", 0, &id));
    assert_false(lw_sid_parse("12", 2, &id));
    assert_false(lw_sid_parse("-1", 2, &id));
    assert_false(lw_sid_parse("1-", 2, &id));
    assert_false(lw_sid_parse("1-2-3", 5, &id));
    assert_false(lw_sid_parse("1-x", 3, &id));
    assert_false(lw_sid_parse("12345678901234567890-0", 22, &id));
    assert_true(lw_sid_cmp((lw_sid_t){1, 2}, (lw_sid_t){1, 3}) < 0);
    assert_true(lw_sid_cmp((lw_sid_t){2, 0}, (lw_sid_t){1, 9}) > 0);
}

/* Random worlds, both directions, every start mode, full and limited reads:
 * ids collide across streams (ties by stream index), some streams are empty,
 * one is hot. */
static void test_merge_order(void **state)
{
    (void)state;
    srand(12345);
    for (int round = 0; round < 40; round++) {
        bool rev = round & 1;
        size_t ns = 1 + (size_t)(rand() % 60);
        world_t *w = world_new(ns, rev);
        for (size_t i = 0; i < ns; i++) {
            size_t len = rand() % 4 == 0 ? 0 : (size_t)(rand() % 12);
            if (i == 0 && round % 3 == 0)
                len = 300; /* hot */
            uint64_t ms = (uint64_t)(rand() % 50);
            for (size_t k = 0; k < len; k++) {
                ms += (uint64_t)(rand() % 3);
                add(w, i, ms, k); /* seq = k keeps ids strictly rising */
            }
        }
        lw_sid_t mid = {25, 3};
        size_t limits[] = {1, 7, 100, 100000};
        for (size_t li = 0; li < 4; li++) {
            check_merge(w, LW_SFROM_OPEN, mid, limits[li], 1, NULL, NULL);
            check_merge(w, LW_SFROM_INCL, mid, limits[li], 1, NULL, NULL);
            check_merge(w, LW_SFROM_AFTER, mid, limits[li], 3, NULL, NULL);
        }
        world_free(w);
    }
}

/* The cost /v1/alerts pays on a cluster (consumers/query/README.md): the
 * newest 100 of alerts spread over 16384 streams, and of one hot stream. */
static void test_merge_cost(void **state)
{
    (void)state;
    size_t rounds, pages;
    world_t *w = world_new(LW_RCLUSTER_SLOTS, true);
    srand(7);
    for (uint64_t t = 0; t < 50000; t++) /* one alert per ms, random slot */
        add(w, (size_t)rand() % LW_RCLUSTER_SLOTS, 1000000 + t, w->s[0].n + t);
    check_merge(w, LW_SFROM_OPEN, (lw_sid_t){0, 0}, 100, 1, &rounds, &pages);
    print_message("spread: %zu rounds, %zu pages\n", rounds, pages);
    assert_true(rounds <= 4);
    assert_true(pages <= LW_RCLUSTER_SLOTS + 300);
    world_free(w);

    w = world_new(LW_RCLUSTER_SLOTS, true);
    for (uint64_t t = 0; t < 5000; t++)
        add(w, 77, 1000000 + t, 0);
    for (size_t i = 0; i < LW_RCLUSTER_SLOTS; i += 97)
        add(w, i == 77 ? 78 : i, 500000, 0); /* older alerts elsewhere */
    check_merge(w, LW_SFROM_OPEN, (lw_sid_t){0, 0}, 1000, 1, &rounds, &pages);
    print_message("hot stream: %zu rounds, %zu pages\n", rounds, pages);
    assert_true(rounds <= 12); /* pages of 2, 4, ... 1000 */
    assert_true(pages <= LW_RCLUSTER_SLOTS + 250);
    world_free(w);

    /* a single Redis: one stream read in pages of 1000 (rule=), as before */
    w = world_new(1, true);
    for (uint64_t t = 0; t < 20000; t++)
        add(w, 0, 1000000 + t, 0);
    check_merge(w, LW_SFROM_OPEN, (lw_sid_t){0, 0}, 100000, 1000, &rounds, &pages);
    print_message("one stream, 20000 entries: %zu rounds\n", rounds);
    assert_int_equal(rounds, 21); /* 20 full pages and the empty one that ends it */
    world_free(w);
}

/* A follower: forward from a start, a bound (the watermark) holds back what
 * could still be overtaken, new entries land between polls, and rearm reads
 * the streams again from their frontiers. Everything comes out once, in order. */
static void test_follow(void **state)
{
    (void)state;
    world_t *w = world_new(50, false);
    lw_smerge_t *m = lw_smerge_new(w->ns, false, fetch, w);
    lw_smerge_start(m, LW_SFROM_INCL, (lw_sid_t){100, 0});
    lw_smerge_first_page(m, 4);
    for (size_t i = 0; i < 50; i += 5)
        add(w, i, 90, 0); /* before the start: never printed */
    lw_sid_t last = {0, 0};
    size_t printed = 0, total = 0;
    char errstr[128];
    srand(99);
    uint64_t now = 100;
    for (int poll = 0; poll < 30; poll++) {
        /* entries land with ids >= the time of each stream's master */
        for (int k = 0; k < 40; k++) {
            size_t s = (size_t)rand() % 50;
            uint64_t ms = now + (uint64_t)(rand() % 5);
            lw_sid_t top = w->s[s].n ? w->s[s].ids[w->s[s].n - 1] : (lw_sid_t){0, 0};
            if (lw_sid_cmp((lw_sid_t){ms, 0}, top) <= 0)
                add(w, s, top.ms, top.seq + 1);
            else
                add(w, s, ms, 0);
            total++;
        }
        now += 5;
        /* what lands later has ms >= now: hand out only what is before it */
        lw_sid_t bound = {now, 0};
        if (poll == 29)
            bound = (lw_sid_t){UINT64_MAX, 0};
        lw_smerge_rearm(m);
        for (;;) {
            lw_sid_t id;
            const void *p;
            bool end;
            assert_int_equal(lw_smerge_next(m, &bound, &id, NULL, &p, &end, errstr, sizeof errstr),
                             LW_OK);
            if (end)
                break;
            assert_true(lw_sid_cmp(id, bound) < 0);
            assert_true(lw_sid_cmp(last, id) <= 0);
            assert_true(id.ms >= 100);
            last = id;
            printed++;
        }
    }
    assert_int_equal(printed, total);
    lw_smerge_destroy(m);
    world_free(w);
}

/* Stream i of a cluster lives in slot i, spelt as the writer spells it. */
static void test_stream_keys(void **state)
{
    (void)state;
    lw_redis_url_t u;
    memset(&u, 0, sizeof u);
    snprintf(u.host, sizeof u.host, "127.0.0.1");
    u.port = 1;
    lw_rcluster_t *cl = lw_rcluster__new_offline(&u);
    assert_non_null(cl);
    assert_int_equal(lw_alert_streams_count(cl), LW_RCLUSTER_SLOTS);
    char key[64];
    for (size_t i = 0; i < LW_RCLUSTER_SLOTS; i++) {
        size_t n = lw_alert_stream_key(cl, i, key, sizeof key);
        assert_true(n > 0);
        assert_int_equal(strncmp(key, "lw:alerts:{", 11), 0);
        assert_int_equal(lw_rcluster_keyslot(key, n), (int)i);
        assert_int_equal(lw_alert_stream_slot(cl, i), (int)i);
    }
    assert_int_equal(lw_alert_stream_key(cl, LW_RCLUSTER_SLOTS, key, sizeof key), 0);
    lw_rcluster_destroy(cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sid_parse),   cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_merge_cost),  cmocka_unit_test(test_follow),
        cmocka_unit_test(test_stream_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
