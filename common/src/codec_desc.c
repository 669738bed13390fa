/*
 * codec_desc.c - the field tables of the current schemas (schemas/LoanEvent.avsc,
 * schemas/OverIndebtednessAlert.avsc and schemas/CreditInquiry.avsc), in schema order. The fast
 * binary path, the Avro C path and the JSON form all walk these tables, so a field exists in one
 * place; lw_codec_new() refuses to start if a table and its .avsc disagree.
 */
#include "codec_int.h"

#include <stddef.h>

#define STR(st, f, d)                                                                              \
    {                                                                                              \
#f, LW_FT_STRING, offsetof(st, f), sizeof(((st *)0)->f), 0, NULL, 0, d                     \
    }
#define LONG(st, f)                                                                                \
    {                                                                                              \
#f, LW_FT_LONG, offsetof(st, f), 0, 0, NULL, 0, NULL                                       \
    }
#define INT(st, f)                                                                                 \
    {                                                                                              \
#f, LW_FT_INT, offsetof(st, f), 0, 0, NULL, 0, NULL                                        \
    }
#define ENUM(st, f, syms, n)                                                                       \
    {                                                                                              \
#f, LW_FT_ENUM, offsetof(st, f), 0, 0, syms, n, NULL                                       \
    }
#define OPT(st, t, f, has)                                                                         \
    {                                                                                              \
#f, t, offsetof(st, f), 0, offsetof(st, has), NULL, 0, NULL                                \
    }

static const lw_field_desc_t lw_event_fields[] = {
    STR(lw_event_t, event_id, NULL),
    ENUM(lw_event_t, event_type, lw_event_type_syms, LW_EVENT__CNT),
    STR(lw_event_t, platform_id, NULL),
    STR(lw_event_t, lender_id, NULL),
    STR(lw_event_t, borrower_id, NULL),
    STR(lw_event_t, loan_id, NULL),
    ENUM(lw_event_t, product, lw_product_syms, LW_PRODUCT__CNT),
    LONG(lw_event_t, sequence),
    LONG(lw_event_t, occurred_at),
    LONG(lw_event_t, amount_fen),
    LONG(lw_event_t, outstanding_fen),
    LONG(lw_event_t, credit_limit_fen),
    INT(lw_event_t, days_past_due),
    LONG(lw_event_t, past_due_fen),
    STR(lw_event_t, currency, "CNY"),
    OPT(lw_event_t, LW_FT_OPT_LONG, annual_income_fen, has_annual_income),
    OPT(lw_event_t, LW_FT_OPT_INT, term_months, has_term_months),
};

static const lw_field_desc_t lw_alert_fields[] = {
    STR(lw_alert_t, alert_id, NULL),
    STR(lw_alert_t, borrower_id, NULL),
    STR(lw_alert_t, rule_id, NULL),
    INT(lw_alert_t, rule_version),
    ENUM(lw_alert_t, severity, lw_severity_syms, LW_SEVERITY__CNT),
    STR(lw_alert_t, reason, NULL),
    LONG(lw_alert_t, total_outstanding_fen),
    INT(lw_alert_t, active_lenders),
    INT(lw_alert_t, active_loans),
    INT(lw_alert_t, window_count),
    LONG(lw_alert_t, window_ms),
    OPT(lw_alert_t, LW_FT_OPT_LONG, annual_income_fen, has_annual_income),
    LONG(lw_alert_t, limit),
    STR(lw_alert_t, trigger_event_id, NULL),
    STR(lw_alert_t, trigger_platform_id, NULL),
    STR(lw_alert_t, trigger_lender_id, NULL),
    LONG(lw_alert_t, raised_at),
};

static const lw_field_desc_t lw_inquiry_fields[] = {
    STR(lw_inquiry_t, inquiry_id, NULL),
    STR(lw_inquiry_t, borrower_id, NULL),
    STR(lw_inquiry_t, institution_id, NULL),
    ENUM(lw_inquiry_t, purpose, lw_purpose_syms, LW_PURPOSE__CNT),
    LONG(lw_inquiry_t, inquired_at),
};

const lw_record_desc_t lw_event_desc = {"LoanEvent", lw_event_fields,
                                        (int)(sizeof(lw_event_fields) / sizeof(lw_event_fields[0])),
                                        sizeof(lw_event_t)};
const lw_record_desc_t lw_alert_desc = {"OverIndebtednessAlert", lw_alert_fields,
                                        (int)(sizeof(lw_alert_fields) / sizeof(lw_alert_fields[0])),
                                        sizeof(lw_alert_t)};

const lw_record_desc_t lw_inquiry_desc = {
    "CreditInquiry", lw_inquiry_fields,
    (int)(sizeof(lw_inquiry_fields) / sizeof(lw_inquiry_fields[0])), sizeof(lw_inquiry_t)};

const lw_record_desc_t *lw_record_desc(lw_record_kind_t kind)
{
    return kind == LW_RECORD_ALERT     ? &lw_alert_desc
           : kind == LW_RECORD_INQUIRY ? &lw_inquiry_desc
                                       : &lw_event_desc;
}
