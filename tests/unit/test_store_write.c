/*
 * test_store_write.c - the store's compare-on-write bookkeeping without a
 * server (consumers/exposure/src/batch.c): write.lua's per-borrower answers
 * (0 written, -1 changed since read) read from raw RESP bytes - the first
 * reply below is the one Redis 7.0.15 sent for an EVAL of the script on
 * three borrowers whose second had changed - and the state kept for the
 * compare from MGET replies. What Redis does with them
 * is tests/integration/test_exposure_script.c (test_write_script_compare,
 * test_lost_update_*).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store_int.h"
#include "lw_test_resp.h"

#include <stdlib.h>
#include <string.h>

/* A flush of n slots written in the order `order` (as lw_store_build_writes leaves it). */
static flush_t *mk_flush(size_t n, const size_t *order)
{
    flush_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->slots = calloc(n, sizeof *f->slots);
    f->order = malloc(n * sizeof *f->order);
    assert_non_null(f->slots);
    assert_non_null(f->order);
    f->nslots = n;
    memcpy(f->order, order, n * sizeof *order);
    return f;
}

static void free_flush(flush_t *f)
{
    free(f->slots);
    free(f->order);
    lw_sbuf_free(&f->olds);
    free(f);
}

static void test_write_codes(void **state)
{
    (void)state;
    /* chunk 1 holds order[1..4): slots 3, 0, 2 */
    const size_t order[] = {1, 3, 0, 2};
    flush_t *f = mk_flush(4, order);
    const chunk_t c = {0, 0, 1, 3, 0, 0};
    redisReply *r = RESP("*3\r\n:0\r\n:-1\r\n:0\r\n");
    assert_true(lw_store_write_codes(f, &c, r));
    freeReplyObject(r);
    assert_int_equal(f->nstale, 1);
    assert_true(f->slots[0].stale); /* the second of the chunk: order[2] */
    assert_false(f->slots[1].stale || f->slots[2].stale || f->slots[3].stale);
    /* every borrower refused */
    r = RESP("*3\r\n:-1\r\n:-1\r\n:-1\r\n");
    assert_true(lw_store_write_codes(f, &c, r));
    freeReplyObject(r);
    assert_int_equal(f->nstale, 4); /* counts on: slot 0 again, 3 and 2 */
    assert_true(f->slots[3].stale && f->slots[2].stale);
    assert_false(f->slots[1].stale);
    free_flush(f);

    /* not an answer of this script to this chunk: nothing marked */
    static const char *bad[] = {
        "*2\r\n:0\r\n:0\r\n",             /* too few */
        "*4\r\n:0\r\n:0\r\n:0\r\n:0\r\n", /* too many */
        "*3\r\n:0\r\n:5\r\n:0\r\n",       /* the former script's "fenced by epoch 5" */
        "*3\r\n:0\r\n$2\r\n-1\r\n:0\r\n", /* a string */
        "-NOSCRIPT No matching script. Please use EVAL.\r\n",
        "$-1\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        f = mk_flush(4, order);
        r = lw_test_resp(bad[i], strlen(bad[i]));
        assert_false(lw_store_write_codes(f, &c, r));
        freeReplyObject(r);
        assert_int_equal(f->nstale, 0);
        for (size_t k = 0; k < 4; k++)
            assert_false(f->slots[k].stale);
        free_flush(f);
    }
    f = mk_flush(4, order);
    assert_false(lw_store_write_codes(f, &c, NULL));
    free_flush(f);
}

/* The state an MGET answered is kept byte for byte (binary, with NULs) for
 * write.lua's compare; nil, or a key of another type (MGET answers nil, a
 * direct GET an error), is "none" (the script's ''). */
static void test_keep_old(void **state)
{
    (void)state;
    const size_t order[] = {0, 1, 2, 3};
    flush_t *f = mk_flush(4, order);
    redisReply *r = RESP("*4\r\n$4\r\n\x05\x00\x01\x02\r\n$-1\r\n$3\r\nabc\r\n:7\r\n");
    for (size_t i = 0; i < 4; i++)
        assert_true(lw_store_keep_old(f, &f->slots[i], r->element[i]));
    freeReplyObject(r);
    assert_false(f->slots[0].old_none);
    assert_int_equal(f->slots[0].old_len, 4);
    assert_memory_equal(f->olds.p + f->slots[0].old_off, "\x05\x00\x01\x02", 4);
    assert_true(f->slots[1].old_none);
    assert_int_equal(f->slots[1].old_len, 0);
    assert_false(f->slots[2].old_none);
    assert_memory_equal(f->olds.p + f->slots[2].old_off, "abc", 3);
    assert_true(f->slots[3].old_none);
    /* an empty string is a state read (though no state is empty), not none */
    r = RESP("$0\r\n\r\n");
    assert_true(lw_store_keep_old(f, &f->slots[1], r));
    freeReplyObject(r);
    assert_false(f->slots[1].old_none);
    assert_int_equal(f->slots[1].old_len, 0);
    free_flush(f);
}

/* Only the borrowers being retried take part in a retry's write. */
static void test_in_pass(void **state)
{
    (void)state;
    const size_t order[] = {0, 1};
    flush_t *f = mk_flush(2, order);
    f->slots[1].redo = true;
    assert_true(lw_store_in_pass(f, &f->slots[0]));
    assert_true(lw_store_in_pass(f, &f->slots[1]));
    f->retrying = true;
    assert_false(lw_store_in_pass(f, &f->slots[0]));
    assert_true(lw_store_in_pass(f, &f->slots[1]));
    free_flush(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_codes),
        cmocka_unit_test(test_keep_old),
        cmocka_unit_test(test_in_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
