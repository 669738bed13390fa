/*
 * fuzz_apply.c - libFuzzer target for lw_bstate_apply() with the default
 * rules (consumers/exposure/src/borrower.c), on any state and any events.
 *
 * Input: a 2-byte length L, L bytes of state string (decoded; when it does
 * not decode the borrower starts empty, as an absent key does), one byte of
 * limits, then events of 24 bytes each, built from their fields so that
 * libFuzzer reaches the rules instead of the decoder: type, loan, lender,
 * platform, sequence, time offset (signed, hours to years), amounts near the
 * edges (2^53, 0), days past due, income. Only events lw_event_validate_at()
 * passes are applied, as in the consumer. Checked after every event: no
 * sanitizer report; a refused or duplicate event changes no byte of the
 * state, and an out-of-order one none unless it says so (a CREDIT_LINE or
 * DRAWDOWN back-dating its loan's window entry: then no loan, no t, at most
 * one entry less, and the same event again changes nothing); the state
 * encodes, decodes and encodes to the same bytes; the limits hold.
 */
#include "exposure_int.h"

#include "loanwire/validate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define T0 1767225600000LL

static uint64_t rd(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int64_t amount(uint8_t sel, uint32_t raw)
{
    switch (sel & 3) {
    case 0:
        return 0;
    case 1:
        return raw;
    case 2:
        return LW_MAX_FEN - (raw & 0xff);
    default:
        return (int64_t)raw * 1000;
    }
}

static void check_same(const lw_sbuf_t *a, const lw_bstate_t *s)
{
    lw_sbuf_t b = {0};
    if (!lw_bstate_encode(s, &b) || b.len != a->len || memcmp(a->p, b.p, a->len))
        abort();
    lw_sbuf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lw_rules_t *rules;
    if (!rules && !(rules = lw_rules_default()))
        abort();
    if (size < 3)
        return 0;
    size_t sl = (size_t)rd(data, 2) % 4096;
    if (sl > size - 3)
        sl = size - 3;
    lw_bstate_t s = {0};
    if (lw_bstate_decode(&s, data + 2, sl) != LW_OK)
        lw_bstate_reset(&s);
    uint8_t lim = data[2 + sl];
    lw_rules_set_limits(rules, 1 + (lim & 15), 1 + (lim >> 4));
    const uint8_t *p = data + 3 + sl, *end = data + size;
    lw_alert_vec_t al = {0};
    lw_sbuf_t before = {0}, after = {0};
    lw_bstate_t d = {0};
    for (; end - p >= 24; p += 24) {
        lw_event_t ev;
        memset(&ev, 0, sizeof ev);
        ev.event_type = (lw_event_type_t)(p[0] % LW_EVENT__CNT);
        snprintf(ev.event_id, sizeof ev.event_id, "e%02x%02x", p[1], p[2]);
        snprintf(ev.platform_id, sizeof ev.platform_id, "p%u", p[3] & 3);
        snprintf(ev.lender_id, sizeof ev.lender_id, "l%u", p[2]);
        snprintf(ev.borrower_id, sizeof ev.borrower_id, "ABCDEFGHIJKLMNOPQRSTUV");
        snprintf(ev.loan_id, sizeof ev.loan_id, "L%u", p[1] & 31);
        snprintf(ev.currency, sizeof ev.currency, "CNY");
        ev.product = (lw_product_t)((p[3] >> 2) % LW_PRODUCT__CNT);
        ev.sequence = (int64_t)rd(p + 4, 3) + 1;
        int32_t off = (int32_t)(uint32_t)rd(p + 7, 4);
        ev.occurred_at = T0 + (int64_t)off * ((p[3] & 0x80) ? 1000 : 1);
        uint32_t raw = (uint32_t)rd(p + 11, 4);
        ev.outstanding_fen = amount(p[15], raw);
        ev.amount_fen = ev.outstanding_fen ? ev.outstanding_fen : 1;
        ev.past_due_fen = amount(p[15] >> 2, raw >> 3);
        ev.credit_limit_fen = amount(p[15] >> 4, raw >> 5);
        ev.days_past_due = p[16] & 1 ? p[17] : 0;
        ev.has_annual_income = p[18] & 1;
        ev.annual_income_fen = amount(p[18] >> 1, (uint32_t)rd(p + 19, 4));
        if (ev.event_type == LW_EVENT_APPLICATION)
            ev.outstanding_fen = 0;
        if (lw_event_validate_at(&ev, T0 + 10LL * 365 * 86400000, NULL) != LW_OK)
            continue;
        before.len = 0;
        if (!lw_bstate_encode(&s, &before))
            abort();
        size_t nl = s.n_loans, nw = s.n_win;
        lw_bapply_out_t o;
        lw_apply_code_t c = lw_bstate_apply(&s, rules, &ev, 1 + (p[3] & 3), 1 + p[2],
                                            1 + (p[23] & 1), p[23] >> 1, &al, &o);
        if (o.nomem)
            break;
        if (c == LW_APPLY_OUT_OF_ORDER && o.changed) {
            if ((ev.event_type != LW_EVENT_CREDIT_LINE && ev.event_type != LW_EVENT_DRAWDOWN) ||
                s.n_loans != nl || (s.n_win != nw && s.n_win + 1 != nw))
                abort();
            after.len = 0;
            if (!lw_bstate_encode(&s, &after))
                abort();
            if (lw_bstate_apply(&s, rules, &ev, 1 + (p[3] & 3), 1 + p[2], 1 + (p[23] & 1),
                                p[23] >> 1, &al, &o) != LW_APPLY_OUT_OF_ORDER ||
                o.changed)
                abort();
            check_same(&after, &s);
        } else if (c != LW_APPLY_APPLIED) {
            check_same(&before, &s);
        }
        if (c == LW_APPLY_REFUSED && !o.reason[0])
            abort();
        /* limits: a state may come in above them, never grow past them */
        if (s.n_loans > nl && s.n_loans > lw_rules_max_loans(rules))
            abort();
        if (s.n_win > nw && s.n_win > lw_rules_max_window(rules))
            abort();
        after.len = 0;
        if (!lw_bstate_encode(&s, &after) || lw_bstate_decode(&d, after.p, after.len) != LW_OK)
            abort();
        check_same(&after, &d);
        al.n = 0;
    }
    lw_bstate_free(&s);
    lw_bstate_free(&d);
    lw_sbuf_free(&before);
    lw_sbuf_free(&after);
    free(al.v);
    return 0;
}
