/*
 * validate.c - domain rules of a loan event, as documented in
 * schemas/README.md ("Validation"). The codec and the JSON reader check
 * shape; this checks meaning, so a producer refuses nonsense before it is
 * published and a consumer dead-letters it instead of applying it.
 */
#include "loanwire/validate.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define LW_MIN_TIME_MS 946684800000LL  /* 2000-01-01T00:00:00Z */
#define LW_MAX_TIME_MS 4102444800000LL /* 2100-01-01T00:00:00Z */
#define LW_MAX_DPD     36500
#define LW_MAX_TERM    600

/* ISO 4217 codes accepted in currency; extend when a platform needs one. */
static const char *const lw_currencies[] = {"CNY", "HKD", "MOP", "TWD", "USD", "EUR", "JPY",
                                            "GBP", "SGD", "KRW", "AUD", "CAD", "CHF", NULL};

static lw_err_t fail(lw_field_error_t *ferr, const char *field, const char *fmt, ...)
{
    va_list ap;
    if (ferr) {
        snprintf(ferr->field, sizeof(ferr->field), "%s", field);
        va_start(ap, fmt);
        vsnprintf(ferr->reason, sizeof(ferr->reason), fmt, ap);
        va_end(ap);
    }
    return LW_ERR_VALIDATION;
}

/* Ids end up inside Redis keys and hash fields: printable ASCII, no space,
 * no ':' (our key separator) and no braces (Redis Cluster hash tags). */
static lw_err_t check_id(const char *v, size_t cap, const char *field, lw_field_error_t *ferr)
{
    size_t n = strnlen(v, cap);
    if (n == 0)
        return fail(ferr, field, "must not be empty");
    if (n == cap)
        return fail(ferr, field, "longer than %zu bytes", cap - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c >= 0x7f)
            return fail(ferr, field, "character %zu is not printable ASCII (no spaces)", i + 1);
        if (c == ':' || c == '{' || c == '}')
            return fail(ferr, field, "must not contain '%c'", c);
    }
    return LW_OK;
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static lw_err_t check_amount(int64_t v, const char *field, lw_field_error_t *ferr)
{
    if (v < 0)
        return fail(ferr, field, "must not be negative (got %" PRId64 ")", v);
    if (v > LW_MAX_FEN)
        return fail(ferr, field, "%" PRId64 " exceeds the maximum of %lld fen", v, LW_MAX_FEN);
    return LW_OK;
}

lw_err_t lw_event_validate(const lw_event_t *ev, lw_field_error_t *ferr)
{
    lw_err_t err;
    size_t n;

    if (ferr)
        ferr->field[0] = ferr->reason[0] = '\0';
    if (!ev)
        return fail(ferr, "", "no event");
    if ((err = check_id(ev->event_id, sizeof(ev->event_id), "event_id", ferr)))
        return err;
    if ((unsigned)ev->event_type >= LW_EVENT__CNT)
        return fail(ferr, "event_type", "unknown event type %d", (int)ev->event_type);
    if ((err = check_id(ev->platform_id, sizeof(ev->platform_id), "platform_id", ferr)) ||
        (err = check_id(ev->lender_id, sizeof(ev->lender_id), "lender_id", ferr)))
        return err;
    n = strnlen(ev->borrower_id, sizeof(ev->borrower_id));
    if (n != LW_BORROWER_ID_LEN)
        return fail(ferr, "borrower_id", "must be %d characters of base64url (got %zu)",
                    LW_BORROWER_ID_LEN, n);
    for (size_t i = 0; i < n; i++)
        if (!is_b64url(ev->borrower_id[i]))
            return fail(ferr, "borrower_id", "character %zu is not base64url (A-Z a-z 0-9 - _)",
                        i + 1);
    if ((err = check_id(ev->loan_id, sizeof(ev->loan_id), "loan_id", ferr)))
        return err;
    if ((unsigned)ev->product >= LW_PRODUCT__CNT)
        return fail(ferr, "product", "unknown product %d", (int)ev->product);
    if (ev->sequence <= 0)
        return fail(ferr, "sequence", "must be > 0 (got %" PRId64 ")", ev->sequence);
    if (ev->occurred_at < LW_MIN_TIME_MS || ev->occurred_at >= LW_MAX_TIME_MS)
        return fail(ferr, "occurred_at",
                    "%" PRId64 " ms is not between 2000-01-01 and 2100-01-01 (ms since epoch)",
                    ev->occurred_at);
    if ((err = check_amount(ev->amount_fen, "amount_fen", ferr)) ||
        (err = check_amount(ev->outstanding_fen, "outstanding_fen", ferr)) ||
        (err = check_amount(ev->credit_limit_fen, "credit_limit_fen", ferr)) ||
        (err = check_amount(ev->past_due_fen, "past_due_fen", ferr)))
        return err;
    if (ev->days_past_due < 0 || ev->days_past_due > LW_MAX_DPD)
        return fail(ferr, "days_past_due", "must be 0..%d (got %d)", LW_MAX_DPD,
                    (int)ev->days_past_due);
    n = strnlen(ev->currency, sizeof(ev->currency));
    bool known = false;
    for (int i = 0; n == LW_CURRENCY_LEN && lw_currencies[i]; i++)
        if (!strcmp(ev->currency, lw_currencies[i]))
            known = true;
    if (!known)
        return fail(ferr, "currency", "'%.*s' is not a supported ISO 4217 code", (int)n,
                    ev->currency);
    if (ev->has_annual_income &&
        (err = check_amount(ev->annual_income_fen, "annual_income_fen", ferr)))
        return err;
    if (ev->has_term_months && (ev->term_months < 1 || ev->term_months > LW_MAX_TERM))
        return fail(ferr, "term_months", "must be 1..%d when present (got %d)", LW_MAX_TERM,
                    (int)ev->term_months);

    /* What each event type must carry. */
    switch (ev->event_type) {
    case LW_EVENT_APPLICATION:
        if (ev->outstanding_fen != 0)
            return fail(ferr, "outstanding_fen", "must be 0 for APPLICATION (no balance yet)");
        break;
    case LW_EVENT_CREDIT_LINE:
        if (ev->product == LW_PRODUCT_REVOLVING && ev->credit_limit_fen <= 0)
            return fail(ferr, "credit_limit_fen", "must be > 0 for a REVOLVING CREDIT_LINE");
        break;
    case LW_EVENT_DRAWDOWN:
        if (ev->amount_fen <= 0)
            return fail(ferr, "amount_fen", "must be > 0 for DRAWDOWN (the amount drawn)");
        break;
    case LW_EVENT_REPAYMENT:
        if (ev->amount_fen <= 0)
            return fail(ferr, "amount_fen", "must be > 0 for REPAYMENT (the amount repaid)");
        break;
    case LW_EVENT_DELINQUENCY:
        if (ev->days_past_due <= 0)
            return fail(ferr, "days_past_due", "must be > 0 for DELINQUENCY");
        break;
    case LW_EVENT_CLOSURE:
        if (ev->outstanding_fen != 0)
            return fail(ferr, "outstanding_fen", "must be 0 for CLOSURE");
        break;
    case LW_EVENT_WRITE_OFF:
    case LW_EVENT_CORRECTION:
    default:
        break;
    }
    return LW_OK;
}
