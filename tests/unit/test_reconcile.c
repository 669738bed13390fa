/*
 * test_reconcile.c - loanwire-reconcile's parts without a server: snapshot
 * lines (every field's errors named), the comparison's order of checks, the
 * discrepancy's JSON line, and --full's fingerprint set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/reconcile.h"
#include "reconcile_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BID "zSwmjZuZogz_-InibzPVDw"

static lw_err_t parse(const char *line, const char *platform, lw_snap_loan_t *l,
                      lw_field_error_t *fe)
{
    return lw_snap_parse(line, strlen(line), platform, l, fe);
}

static void test_parse_good(void **state)
{
    (void)state;
    lw_snap_loan_t l;
    lw_field_error_t fe;
    const char *line = "{\"platform_id\":\"ALIPAY\",\"loan_id\":\"JB-1\",\"borrower_id\":\"" BID
                       "\",\"sequence\":7,\"outstanding_fen\":123456789012}";
    assert_int_equal(parse(line, "ALIPAY", &l, &fe), LW_OK);
    assert_string_equal(l.platform_id, "ALIPAY");
    assert_string_equal(l.loan_id, "JB-1");
    assert_string_equal(l.borrower_id, BID);
    assert_int_equal(l.sequence, 7);
    assert_int_equal(l.outstanding_fen, 123456789012LL);
    /* any order, spaces, no platform filter */
    const char *l2 = " { \"outstanding_fen\" : 0, \"sequence\": 1, \"borrower_id\": \"" BID
                     "\", \"loan_id\": \"x\", \"platform_id\": \"JD\" } ";
    assert_int_equal(parse(l2, NULL, &l, &fe), LW_OK);
    assert_int_equal(l.outstanding_fen, 0);
}

typedef struct {
    const char *line;
    const char *field;
    const char *reason; /* a fragment */
} bad_t;

static void test_parse_bad(void **state)
{
    (void)state;
#define REST "\"borrower_id\":\"" BID "\",\"sequence\":7"
    static const bad_t cases[] = {
        {"", "", "not JSON"},
        {"{\"platform_id\":", "", "not JSON"},
        {"[1,2]", "", "must be a JSON object, not an array"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\"," REST ",\"outstanding_fen\":12.5}",
         "outstanding_fen", "not a decimal"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\"," REST ",\"outstanding_fen\":\"100\"}",
         "outstanding_fen", "not a string"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\"," REST ",\"outstanding_fen\":-1}",
         "outstanding_fen", "out of range"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\"," REST ",\"outstanding_fen\":10000000000001}",
         "outstanding_fen", "out of range"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\"," REST "}", "outstanding_fen", "missing"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\",\"borrower_id\":\"" BID
         "\",\"sequence\":0,\"outstanding_fen\":1}",
         "sequence", "out of range"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\",\"borrower_id\":\"" BID
         "\",\"sequence\":9007199254740992,\"outstanding_fen\":1}",
         "sequence", "out of range"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\",\"borrower_id\":\"" BID
         "\",\"sequence\":null,\"outstanding_fen\":1}",
         "sequence", "not null"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\",\"borrower_id\":\"short\",\"sequence\":1,"
         "\"outstanding_fen\":1}",
         "borrower_id", "22 characters"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"\"," REST ",\"outstanding_fen\":1}", "loan_id",
         "must not be empty"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"a b\"," REST ",\"outstanding_fen\":1}", "loan_id",
         "not printable ASCII"},
        {"{\"platform_id\":\"P\",\"loan_id\":"
         "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"," REST
         ",\"outstanding_fen\":1}",
         "loan_id", "longer than 64"},
        {"{\"loan_id\":\"L\"," REST ",\"outstanding_fen\":1}", "platform_id", "missing"},
        {"{\"platform_id\":\"Q\",\"loan_id\":\"L\"," REST ",\"outstanding_fen\":1}", "platform_id",
         "not the platform reconciled"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\"," REST ",\"outstanding_fen\":1,\"status\":1}",
         "status", "unknown field"},
        {"{\"platform_id\":\"P\",\"platform_id\":\"P\",\"loan_id\":\"L\"," REST
         ",\"outstanding_fen\":1}",
         "", "not JSON"},
        {"{\"platform_id\":\"P\",\"loan_id\":\"L\"," REST
         ",\"outstanding_fen\":99999999999999999999999}",
         "", "not JSON"},
    };
#undef REST
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lw_snap_loan_t l;
        lw_field_error_t fe = {{0}, {0}};
        lw_err_t err = parse(cases[i].line, "P", &l, &fe);
        if (err == LW_OK || strcmp(fe.field, cases[i].field) != 0 ||
            !strstr(fe.reason, cases[i].reason))
            fail_msg("case %zu (%s): err %d field '%s' reason '%s'", i, cases[i].line, (int)err,
                     fe.field, fe.reason);
        assert_string_equal(l.loan_id, ""); /* nothing half-filled */
    }
}

static lw_loan_state_t loan(lw_loan_status_t st, int64_t seq, int64_t out)
{
    lw_loan_state_t b;
    memset(&b, 0, sizeof b);
    snprintf(b.platform_id, sizeof b.platform_id, "P");
    snprintf(b.loan_id, sizeof b.loan_id, "L");
    snprintf(b.lender_id, sizeof b.lender_id, "BANK");
    b.status = st;
    b.sequence = seq;
    b.outstanding_fen = out;
    b.updated_at = 1767225600000LL;
    return b;
}

static void test_compare(void **state)
{
    (void)state;
    lw_snap_loan_t s = {"P", "L", BID, 5, 1000};
    lw_loan_state_t b;
    assert_int_equal(lw_recon_compare(&s, NULL), LW_RECON_MISSING_AT_BUREAU);
    b = loan(LW_LOAN_ACTIVE, 5, 1000);
    assert_int_equal(lw_recon_compare(&s, &b), LW_RECON_MATCH);
    b = loan(LW_LOAN_DELINQUENT, 5, 999);
    assert_int_equal(lw_recon_compare(&s, &b), LW_RECON_BALANCE_MISMATCH);
    b = loan(LW_LOAN_ACTIVE, 4, 1000);
    assert_int_equal(lw_recon_compare(&s, &b), LW_RECON_BUREAU_BEHIND);
    b = loan(LW_LOAN_ACTIVE, 6, 1000);
    assert_int_equal(lw_recon_compare(&s, &b), LW_RECON_BUREAU_AHEAD);
    b = loan(LW_LOAN_ACTIVE, 4, 3);
    assert_int_equal(lw_recon_compare(&s, &b), LW_RECON_BUREAU_BEHIND); /* not a balance */
    /* a line with nothing drawn is open */
    lw_snap_loan_t z = {"P", "L", BID, 5, 0};
    b = loan(LW_LOAN_PAID, 5, 0);
    assert_int_equal(lw_recon_compare(&z, &b), LW_RECON_MATCH);
    /* not open at the bureau: missing, whatever the sequence */
    for (int64_t seq = 4; seq <= 6; seq++) {
        b = loan(LW_LOAN_CLOSED, seq, 0);
        assert_int_equal(lw_recon_compare(&s, &b), LW_RECON_MISSING_AT_BUREAU);
        b = loan(LW_LOAN_WRITTEN_OFF, seq, 1000);
        assert_int_equal(lw_recon_compare(&s, &b), LW_RECON_MISSING_AT_BUREAU);
    }
    assert_true(lw_recon_is_active(&(lw_loan_state_t){.status = LW_LOAN_DELINQUENT}));
    assert_false(lw_recon_is_active(&(lw_loan_state_t){.status = LW_LOAN_PAID}));
    assert_string_equal(lw_recon_kind_name(LW_RECON_UNKNOWN_TO_PLATFORM), "unknown_to_platform");
    assert_null(lw_recon_kind_name(LW_RECON__CNT));
}

static void test_find(void **state)
{
    (void)state;
    lw_loan_state_t loans[3] = {loan(LW_LOAN_ACTIVE, 1, 1), loan(LW_LOAN_ACTIVE, 2, 2),
                                loan(LW_LOAN_ACTIVE, 3, 3)};
    snprintf(loans[0].platform_id, sizeof loans[0].platform_id, "Q"); /* same loan id, other */
    snprintf(loans[2].loan_id, sizeof loans[2].loan_id, "M");
    lw_borrower_state_t st = {.n_loans = 3, .loans = loans};
    assert_ptr_equal(lw_recon_find(&st, "P", "L"), &loans[1]);
    assert_ptr_equal(lw_recon_find(&st, "Q", "L"), &loans[0]);
    assert_ptr_equal(lw_recon_find(&st, "P", "M"), &loans[2]);
    assert_null(lw_recon_find(&st, "P", "N"));
    assert_null(lw_recon_find(NULL, "P", "L"));
}

static void test_diff_json(void **state)
{
    (void)state;
    char buf[1024];
    lw_snap_loan_t s = {"P", "L", BID, 5, 1000};
    lw_loan_state_t b = loan(LW_LOAN_ACTIVE, 5, 900);
    int n =
        lw_recon_diff_json(LW_RECON_BALANCE_MISMATCH, "P", BID, "L", &s, 12, &b, buf, sizeof buf);
    assert_true(n > 0);
    assert_string_equal(buf, "{\"kind\":\"balance_mismatch\",\"platform_id\":\"P\","
                             "\"borrower_id\":\"" BID "\",\"loan_id\":\"L\",\"line\":12,"
                             "\"platform\":{\"sequence\":5,\"outstanding_fen\":1000},"
                             "\"bureau\":{\"sequence\":5,\"outstanding_fen\":900,"
                             "\"status\":\"ACTIVE\",\"lender_id\":\"BANK\","
                             "\"updated_at\":1767225600000}}\n");
    assert_int_equal(n, (int)strlen(buf));
    n = lw_recon_diff_json(LW_RECON_UNKNOWN_TO_PLATFORM, "P\"x", BID, "a\\b", NULL, 0, NULL, buf,
                           sizeof buf);
    assert_string_equal(buf, "{\"kind\":\"unknown_to_platform\",\"platform_id\":\"P\\\"x\","
                             "\"borrower_id\":\"" BID "\",\"loan_id\":\"a\\\\b\","
                             "\"platform\":null,\"bureau\":null}\n");
    assert_int_equal(
        lw_recon_diff_json(LW_RECON_MISSING_AT_BUREAU, "P", BID, "L", &s, 1, &b, buf, 40), -1);
}

static void test_fpset(void **state)
{
    (void)state;
    lw_fpset_t s;
    lw_fpset_init(&s);
    assert_false(lw_fpset_has(&s, 42));
    char bid[32], lid[32];
    for (int i = 0; i < 200000; i++) {
        snprintf(bid, sizeof bid, "B%021d", i % 5000);
        snprintf(lid, sizeof lid, "L-%d", i);
        assert_int_equal(lw_fpset_add(&s, lw_recon_fingerprint(bid, lid)), 1);
    }
    assert_int_equal(s.n, 200000);
    assert_true(s.n * 4 <= s.cap * 3);
    assert_true(lw_fpset_bytes(&s) <= 200000 * 22);
    for (int i = 0; i < 200000; i++) {
        snprintf(bid, sizeof bid, "B%021d", i % 5000);
        snprintf(lid, sizeof lid, "L-%d", i);
        assert_true(lw_fpset_has(&s, lw_recon_fingerprint(bid, lid)));
        assert_int_equal(lw_fpset_add(&s, lw_recon_fingerprint(bid, lid)), 0);
    }
    /* borrower and loan are not simply concatenated */
    assert_true(lw_recon_fingerprint("ab", "c") != lw_recon_fingerprint("a", "bc"));
    assert_false(lw_fpset_has(&s, lw_recon_fingerprint("nobody", "L-1")));
    assert_int_equal(lw_fpset_add(&s, 0), 1);
    assert_true(lw_fpset_has(&s, 0));
    lw_fpset_free(&s);
    lw_fpset_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good), cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_compare),    cmocka_unit_test(test_find),
        cmocka_unit_test(test_diff_json),  cmocka_unit_test(test_fpset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
