/*
 * validate.c - domain rules of a loan event, as documented in
 * schemas/README.md ("Validation"). The codec and the JSON reader check
 * shape; this checks meaning, so a producer refuses nonsense before it is
 * published and a consumer dead-letters it instead of applying it.
 */
#include "loanwire/id.h"
#include "loanwire/validate.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LW_MIN_TIME_MS 946684800000LL  /* 2000-01-01T00:00:00Z */
#define LW_MAX_TIME_MS 4102444800000LL /* 2100-01-01T00:00:00Z */
#define LW_MAX_DPD     36500
#define LW_MAX_TERM    600

/* ISO 4217 codes accepted in currency; extend when a platform needs one. */
static const char *const lw_currencies[] = {"CNY", "HKD", "MOP", "TWD", "USD", "EUR", "JPY",
                                            "GBP", "SGD", "KRW", "AUD", "CAD", "CHF", NULL};

/* Relaxed: a setting written once at start and read per event. */
static _Atomic int64_t lw_max_future_ms = LW_MAX_FUTURE_MS_DEFAULT;

void lw_validate_set_max_future_ms(int64_t ms)
{
    atomic_store_explicit(&lw_max_future_ms, ms > 0 ? ms : 0, memory_order_relaxed);
}

int64_t lw_validate_max_future_ms(void)
{
    return atomic_load_explicit(&lw_max_future_ms, memory_order_relaxed);
}

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
 * no ':' (our key separator) and no braces (Redis Cluster hash tags). This
 * runs for every event produced, so the usual id is checked 8 bytes at a time
 * and without a strnlen() call; byte by byte through this table otherwise
 * (1: allowed). */
static const unsigned char lw_id_char[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x50 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, /* 0x70 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x80 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x90 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xa0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xb0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xc0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xd0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xe0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xf0 */
};

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LW_SWAR 1
/* High bit set in each byte of w that is not allowed in an id, NUL included.
 * Borrows and carries only run upwards, so the lowest flag is exact. */
static inline uint64_t lw_id_bad8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t c = w ^ (ones * ':'), l = w ^ (ones * '{'), r = w ^ (ones * '}');
    return (((w - ones * 0x21) & ~w) | /* below '!' */
            (w + ones) | w |           /* above '~' */
            ((c - ones) & ~c) | ((l - ones) & ~l) | ((r - ones) & ~r)) &
           high;
}
#endif

static lw_err_t check_id(const char *v, size_t cap, const char *field, lw_field_error_t *ferr)
{
    size_t i = 0;

#ifdef LW_SWAR
    for (; cap - i >= 8; i += 8) {
        uint64_t w, m;
        memcpy(&w, v + i, 8);
        if ((m = lw_id_bad8(w)) != 0) {
            i += (size_t)__builtin_ctzll(m) >> 3;
            goto stop;
        }
    }
#endif
    while (i < cap && lw_id_char[(unsigned char)v[i]])
        i++;
#ifdef LW_SWAR
stop:
#endif
    if (i < cap && v[i] == '\0') {
        if (i == 0)
            return fail(ferr, field, "must not be empty");
        return LW_OK;
    }
    /* The order of checks of the plain version: no NUL at all is "too long",
     * whatever the bytes. */
    if (i == cap || strnlen(v + i, cap - i) == cap - i)
        return fail(ferr, field, "longer than %zu bytes", cap - 1);
    unsigned char c = (unsigned char)v[i];
    if (c <= 0x20 || c >= 0x7f)
        return fail(ferr, field, "character %zu is not printable ASCII (no spaces)", i + 1);
    return fail(ferr, field, "must not contain '%c'", c);
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return lw_event_validate_at(ev, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, ferr);
}

lw_err_t lw_event_validate_at(const lw_event_t *ev, int64_t now_ms, lw_field_error_t *ferr)
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
    for (n = 0; n < LW_BORROWER_ID_LEN && lw_b64url_value((unsigned char)ev->borrower_id[n]) >= 0;
         n++)
        ;
    if (n != LW_BORROWER_ID_LEN || ev->borrower_id[n] != '\0') {
        size_t len = strnlen(ev->borrower_id, sizeof(ev->borrower_id));
        if (len != LW_BORROWER_ID_LEN)
            return fail(ferr, "borrower_id", "must be %d characters of base64url (got %zu)",
                        LW_BORROWER_ID_LEN, len);
        return fail(ferr, "borrower_id", "character %zu is not base64url (A-Z a-z 0-9 - _)", n + 1);
    }
    if ((err = check_id(ev->loan_id, sizeof(ev->loan_id), "loan_id", ferr)))
        return err;
    if ((unsigned)ev->product >= LW_PRODUCT__CNT)
        return fail(ferr, "product", "unknown product %d", (int)ev->product);
    if (ev->sequence <= 0)
        return fail(ferr, "sequence", "must be > 0 (got %" PRId64 ")", ev->sequence);
    if (ev->sequence >= LW_SEQUENCE_LIMIT)
        return fail(ferr, "sequence", "%" PRId64 " is not below 2^53", ev->sequence);
    if (ev->occurred_at < LW_MIN_TIME_MS || ev->occurred_at >= LW_MAX_TIME_MS)
        return fail(ferr, "occurred_at",
                    "%" PRId64 " ms is not between 2000-01-01 and 2100-01-01 (ms since epoch)",
                    ev->occurred_at);
    /* past events (backfills) are fine; the future only within the bound */
    const int64_t ahead = lw_validate_max_future_ms();
    int64_t by;
    if (ahead > 0 && (__builtin_sub_overflow(ev->occurred_at, now_ms, &by) || by > ahead))
        return fail(ferr, "occurred_at",
                    "%" PRId64 " ms is more than %" PRId64 " ms ahead of the clock (%" PRId64
                    " ms); a clock or unit error would blind the windows of this borrower",
                    ev->occurred_at, ahead, now_ms);
    if ((err = check_amount(ev->amount_fen, "amount_fen", ferr)) ||
        (err = check_amount(ev->outstanding_fen, "outstanding_fen", ferr)) ||
        (err = check_amount(ev->credit_limit_fen, "credit_limit_fen", ferr)) ||
        (err = check_amount(ev->past_due_fen, "past_due_fen", ferr)))
        return err;
    if (ev->days_past_due < 0 || ev->days_past_due > LW_MAX_DPD)
        return fail(ferr, "days_past_due", "must be 0..%d (got %d)", LW_MAX_DPD,
                    (int)ev->days_past_due);
    /* Codes compared with their NUL as 4 bytes (sizeof currency): no strcmp call. */
    bool known = false;
    for (int i = 0; lw_currencies[i]; i++)
        if (!memcmp(ev->currency, lw_currencies[i], LW_CURRENCY_LEN + 1)) {
            known = true;
            break;
        }
    if (!known) {
        n = strnlen(ev->currency, sizeof(ev->currency));
        return fail(ferr, "currency", "'%.*s' is not a supported ISO 4217 code", (int)n,
                    ev->currency);
    }
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
