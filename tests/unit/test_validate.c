/*
 * test_validate.c - domain rules of lw_event_validate() (common/src/validate.c),
 * one broken rule at a time, each naming its field, plus the per-type rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/validate.h"

#include <stdio.h>
#include <string.h>

static lw_event_t good(lw_event_type_t t)
{
    lw_event_t ev;
    memset(&ev, 0, sizeof(ev));
    strcpy(ev.event_id, "ev-1");
    ev.event_type = t;
    strcpy(ev.platform_id, "jd");
    strcpy(ev.lender_id, "bank.7");
    strcpy(ev.borrower_id, "Zz09-_Zz09-_Zz09-_Zz09");
    strcpy(ev.loan_id, "L-1");
    ev.product = LW_PRODUCT_REVOLVING;
    ev.sequence = 1;
    ev.occurred_at = 1700000000000LL;
    ev.amount_fen = 100;
    ev.outstanding_fen = t == LW_EVENT_APPLICATION || t == LW_EVENT_CLOSURE ? 0 : 100;
    ev.credit_limit_fen = 1000;
    ev.days_past_due = t == LW_EVENT_DELINQUENCY ? 31 : 0;
    strcpy(ev.currency, "CNY");
    return ev;
}

static void expect(const lw_event_t *ev, const char *field, const char *reason_part)
{
    lw_field_error_t fe;
    lw_err_t err = lw_event_validate(ev, &fe);
    if (err != LW_ERR_VALIDATION || strcmp(fe.field, field) || !strstr(fe.reason, reason_part))
        print_error("want %s/%s, got %d %s: %s\n", field, reason_part, err, fe.field, fe.reason);
    assert_int_equal(err, LW_ERR_VALIDATION);
    assert_string_equal(fe.field, field);
    assert_non_null(strstr(fe.reason, reason_part));
}

static void valid_events_pass(void **state)
{
    (void)state;
    lw_field_error_t fe;
    for (int t = 0; t < LW_EVENT__CNT; t++) {
        lw_event_t ev = good((lw_event_type_t)t);
        assert_int_equal(lw_event_validate(&ev, &fe), LW_OK);
    }
    lw_event_t ev = good(LW_EVENT_DRAWDOWN);
    ev.amount_fen = LW_MAX_FEN;
    ev.has_term_months = true;
    ev.term_months = 600;
    ev.has_annual_income = true;
    ev.annual_income_fen = 0;
    ev.days_past_due = 36500;
    ev.occurred_at = 946684800000LL;
    strcpy(ev.currency, "MOP");
    assert_int_equal(lw_event_validate(&ev, &fe), LW_OK);
}

static void each_rule(void **state)
{
    (void)state;
    lw_event_t ev;
#define CASE(stmt, field, why)                                                                     \
    do {                                                                                           \
        ev = good(LW_EVENT_DRAWDOWN);                                                              \
        stmt;                                                                                      \
        expect(&ev, field, why);                                                                   \
    } while (0)
    CASE(ev.event_id[0] = '\0', "event_id", "empty");
    CASE(strcpy(ev.event_id, "a b"), "event_id", "printable");
    CASE(strcpy(ev.platform_id, "a:b"), "platform_id", "':'");
    CASE(strcpy(ev.lender_id, "{x}"), "lender_id", "'{'");
    CASE(strcpy(ev.loan_id, "x}"), "loan_id", "'}'");
    CASE(strcpy(ev.loan_id, "\xe4\xb8\xad"), "loan_id", "printable");
    CASE(strcpy(ev.borrower_id, "short"), "borrower_id", "22");
    CASE(ev.borrower_id[3] = '+', "borrower_id", "base64url");
    CASE(ev.event_type = (lw_event_type_t)99, "event_type", "unknown");
    CASE(ev.product = (lw_product_t)-1, "product", "unknown");
    CASE(ev.sequence = 0, "sequence", "> 0");
    /* one bound for producer and consumer (issue 21 item 4) */
    CASE(ev.sequence = LW_SEQUENCE_LIMIT, "sequence", "2^53");
    CASE(ev.sequence = INT64_MAX, "sequence", "2^53");
    CASE(ev.occurred_at = 946684799999LL, "occurred_at", "2000-01-01");
    CASE(ev.occurred_at = 4102444800000LL, "occurred_at", "2100-01-01");
    CASE(ev.amount_fen = -1, "amount_fen", "negative");
    CASE(ev.amount_fen = LW_MAX_FEN + 1, "amount_fen", "maximum");
    CASE(ev.outstanding_fen = -5, "outstanding_fen", "negative");
    CASE(ev.credit_limit_fen = -5, "credit_limit_fen", "negative");
    CASE(ev.past_due_fen = -5, "past_due_fen", "negative");
    CASE(ev.days_past_due = -1, "days_past_due", "0..36500");
    CASE(ev.days_past_due = 36501, "days_past_due", "0..36500");
    CASE(strcpy(ev.currency, "cny"), "currency", "ISO 4217");
    CASE(strcpy(ev.currency, "XXX"), "currency", "ISO 4217");
    CASE(strcpy(ev.currency, "CN"), "currency", "ISO 4217");
    CASE((ev.has_annual_income = true, ev.annual_income_fen = -1), "annual_income_fen", "negative");
    CASE((ev.has_term_months = true, ev.term_months = 0), "term_months", "1..600");
    CASE((ev.has_term_months = true, ev.term_months = 601), "term_months", "1..600");
    CASE(ev.amount_fen = 0, "amount_fen", "DRAWDOWN");
#undef CASE
    /* an absent optional field is not checked */
    ev = good(LW_EVENT_DRAWDOWN);
    ev.annual_income_fen = -1;
    ev.term_months = -1;
    assert_int_equal(lw_event_validate(&ev, NULL), LW_OK);
}

/* Issue 21 item 13: an event dated too far ahead of the clock is refused
 * (a unit or clock bug would blind the borrower's windows); the past is not. */
static void future_bound(void **state)
{
    (void)state;
    lw_field_error_t fe;
    const int64_t now = 1767225600000LL; /* 2026-01-01 */
    lw_event_t ev = good(LW_EVENT_APPLICATION);
    ev.outstanding_fen = 0;
    assert_int_equal(lw_validate_max_future_ms(), LW_MAX_FUTURE_MS_DEFAULT);
    ev.occurred_at = now + LW_MAX_FUTURE_MS_DEFAULT;
    assert_int_equal(lw_event_validate_at(&ev, now, &fe), LW_OK);
    ev.occurred_at = now + LW_MAX_FUTURE_MS_DEFAULT + 1;
    assert_int_equal(lw_event_validate_at(&ev, now, &fe), LW_ERR_VALIDATION);
    assert_string_equal(fe.field, "occurred_at");
    assert_non_null(strstr(fe.reason, "ahead of the clock"));
    ev.occurred_at = 4000000000000LL; /* 2096: the mis-dated event */
    assert_int_equal(lw_event_validate(&ev, &fe), LW_ERR_VALIDATION);
    assert_non_null(strstr(fe.reason, "ahead of the clock"));
    ev.occurred_at = 946684800000LL; /* a backfill from 2000 */
    assert_int_equal(lw_event_validate_at(&ev, now, &fe), LW_OK);
    lw_validate_set_max_future_ms(60000);
    ev.occurred_at = now + 60001;
    assert_int_equal(lw_event_validate_at(&ev, now, &fe), LW_ERR_VALIDATION);
    lw_validate_set_max_future_ms(0); /* off */
    ev.occurred_at = 4000000000000LL;
    assert_int_equal(lw_event_validate(&ev, &fe), LW_OK);
    lw_validate_set_max_future_ms(LW_MAX_FUTURE_MS_DEFAULT);
}

static void per_type_rules(void **state)
{
    (void)state;
    lw_event_t ev = good(LW_EVENT_REPAYMENT);
    ev.amount_fen = 0;
    expect(&ev, "amount_fen", "REPAYMENT");
    ev = good(LW_EVENT_APPLICATION);
    ev.outstanding_fen = 1;
    expect(&ev, "outstanding_fen", "APPLICATION");
    ev = good(LW_EVENT_CLOSURE);
    ev.outstanding_fen = 1;
    expect(&ev, "outstanding_fen", "CLOSURE");
    ev = good(LW_EVENT_DELINQUENCY);
    ev.days_past_due = 0;
    expect(&ev, "days_past_due", "DELINQUENCY");
    ev = good(LW_EVENT_CREDIT_LINE);
    ev.credit_limit_fen = 0;
    expect(&ev, "credit_limit_fen", "REVOLVING");
    ev.product = LW_PRODUCT_INSTALLMENT; /* only revolving lines need a limit */
    assert_int_equal(lw_event_validate(&ev, NULL), LW_OK);
    ev = good(LW_EVENT_WRITE_OFF); /* a write-off may leave a balance on record */
    assert_int_equal(lw_event_validate(&ev, NULL), LW_OK);
}

/* The id and borrower_id rules written the plain way (strnlen, then byte by
 * byte): validate.c checks words at a time, and must say exactly this. */
static void ref_id(const char *v, size_t cap, char *out, size_t outcap)
{
    size_t n = strnlen(v, cap);
    if (n == 0) {
        snprintf(out, outcap, "must not be empty");
        return;
    }
    if (n == cap) {
        snprintf(out, outcap, "longer than %zu bytes", cap - 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(out, outcap, "character %zu is not printable ASCII (no spaces)", i + 1);
            return;
        }
        if (c == ':' || c == '{' || c == '}') {
            snprintf(out, outcap, "must not contain '%c'", c);
            return;
        }
    }
    out[0] = '\0';
}

static void ref_borrower(const char *v, char *out, size_t outcap)
{
    size_t n = strnlen(v, LW_BORROWER_ID_LEN + 1);
    if (n != LW_BORROWER_ID_LEN) {
        snprintf(out, outcap, "must be %d characters of base64url (got %zu)", LW_BORROWER_ID_LEN,
                 n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            snprintf(out, outcap, "character %zu is not base64url (A-Z a-z 0-9 - _)", i + 1);
            return;
        }
    }
    out[0] = '\0';
}

static uint32_t next_rand(uint32_t *rng)
{
    *rng = *rng * 1103515245u + 12345u;
    return *rng;
}

/* Half of the time, one byte of s[0..len) becomes one of odd[]. */
static void maybe_plant(char *s, size_t len, const unsigned char *odd, size_t nodd, uint32_t *rng)
{
    if (len > 0 && (next_rand(rng) >> 12) % 2) {
        uint32_t r = next_rand(rng);
        s[(r >> 8) % len] = (char)odd[(r >> 20) % nodd];
    }
}

/* The verdict of lw_event_validate() on ev is want ("" = valid) for field. */
static void expect_verdict(const lw_event_t *ev, const char *field, const char *want)
{
    lw_field_error_t fe;
    lw_err_t err = lw_event_validate(ev, &fe);
    if (!want[0]) {
        assert_int_equal(err, LW_OK);
    } else {
        assert_int_equal(err, LW_ERR_VALIDATION);
        assert_string_equal(fe.field, field);
        assert_string_equal(fe.reason, want);
    }
}

/* Random ids of every length 0..cap (and without NUL), with now and then one
 * byte of each kind (NUL, space, ':', braces, DEL, high bytes) at every
 * position: the same verdict and message as the plain rules. */
static void ids_match_plain_rules(void **state)
{
    static const unsigned char odd[] = {0x00, 0x01, ' ', ':', '{', '}', 0x7f, 0x80, 0xff, '!', '~'};
    uint32_t rng = 12345;
    (void)state;
    for (int round = 0; round < 20000; round++) {
        lw_event_t ev = good(LW_EVENT_DRAWDOWN);
        char want[200];
        size_t len = (next_rand(&rng) >> 8) % (sizeof ev.loan_id + 1); /* cap + 1: no NUL */
        for (size_t i = 0; i < sizeof ev.loan_id; i++) {
            uint32_t r = next_rand(&rng);
            ev.loan_id[i] = i < len ? (char)('!' + (r >> 16) % 94) : (char)((r >> 16) & 0xff);
        }
        if (len < sizeof ev.loan_id)
            ev.loan_id[len] = '\0';
        maybe_plant(ev.loan_id, len, odd, sizeof odd, &rng);
        ref_id(ev.loan_id, sizeof ev.loan_id, want, sizeof want);
        expect_verdict(&ev, "loan_id", want);

        ev = good(LW_EVENT_DRAWDOWN);
        len = (next_rand(&rng) >> 8) % (sizeof ev.borrower_id + 1);
        memset(ev.borrower_id, 'x', sizeof ev.borrower_id);
        if (len < sizeof ev.borrower_id)
            ev.borrower_id[len] = '\0';
        maybe_plant(ev.borrower_id, len, odd, sizeof odd, &rng);
        ref_borrower(ev.borrower_id, want, sizeof want);
        expect_verdict(&ev, "borrower_id", want);
    }
}

/* Every supported code passes, near misses do not (the code is compared as 4
 * bytes with its NUL). */
static void currencies(void **state)
{
    static const char *const ok[] = {"CNY", "HKD", "USD", "EUR", "CHF"};
    static const char *const bad[] = {"CN", "cny", "CNZ", "", "XXX"};
    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        lw_event_t ev = good(LW_EVENT_DRAWDOWN);
        strcpy(ev.currency, ok[i]);
        assert_int_equal(lw_event_validate(&ev, NULL), LW_OK);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lw_event_t ev = good(LW_EVENT_DRAWDOWN);
        strcpy(ev.currency, bad[i]);
        expect(&ev, "currency", "is not a supported ISO 4217 code");
    }
    lw_event_t ev = good(LW_EVENT_DRAWDOWN);
    memcpy(ev.currency, "CNYX", 4); /* no NUL */
    expect(&ev, "currency", "'CNYX' is not a supported");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_events_pass), cmocka_unit_test(each_rule),
        cmocka_unit_test(per_type_rules),    cmocka_unit_test(ids_match_plain_rules),
        cmocka_unit_test(currencies),        cmocka_unit_test(future_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
