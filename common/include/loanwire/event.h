/*
 * loanwire/event.h - the in-memory form of one loan event and of one alert.
 *
 * These plain structs are what every part of Loanwire passes around: the
 * JSON reader fills them, the codec turns them into single-object Avro and
 * back, the validator checks them, the consumer applies them to Redis.
 * Strings are fixed-size, NUL-terminated buffers so that decoding an event
 * allocates nothing; a value longer than its buffer is a validation error,
 * never a silent truncation. Money is int64_t fen (1/100 yuan), always.
 */
#ifndef LOANWIRE_EVENT_H
#define LOANWIRE_EVENT_H

#include "loanwire/api.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Buffer sizes include the terminating NUL. */
#define LW_ID_MAX          64 /* event_id, platform_id, lender_id, loan_id */
#define LW_BORROWER_ID_LEN 22 /* base64url of 16 bytes, no padding */
#define LW_CURRENCY_LEN    3  /* ISO 4217 alphabetic code */
#define LW_TEXT_MAX        256

/* Largest amount any fen field may hold (10^13 fen = 100 billion yuan). Sums
 * of hundreds of loans then stay below 2^53 (~9e15), so they are exact even
 * for readers that hold JSON numbers as doubles (schemas/README.md). */
#define LW_MAX_FEN 10000000000000LL

/* Symbol order is the Avro enum order in schemas/LoanEvent.avsc. */
typedef enum lw_event_type {
    LW_EVENT_APPLICATION = 0,
    LW_EVENT_CREDIT_LINE,
    LW_EVENT_DRAWDOWN,
    LW_EVENT_REPAYMENT,
    LW_EVENT_DELINQUENCY,
    LW_EVENT_WRITE_OFF,
    LW_EVENT_CLOSURE,
    LW_EVENT_CORRECTION,
    LW_EVENT__CNT
} lw_event_type_t;

typedef enum lw_product {
    LW_PRODUCT_REVOLVING = 0,
    LW_PRODUCT_INSTALLMENT,
    LW_PRODUCT_OTHER,
    LW_PRODUCT__CNT
} lw_product_t;

typedef struct lw_event {
    char event_id[LW_ID_MAX + 1];
    lw_event_type_t event_type;
    char platform_id[LW_ID_MAX + 1];
    char lender_id[LW_ID_MAX + 1];
    char borrower_id[LW_BORROWER_ID_LEN + 1];
    char loan_id[LW_ID_MAX + 1];
    lw_product_t product;
    int64_t sequence;        /* per loan, strictly increasing, > 0 */
    int64_t occurred_at;     /* event time, ms since the Unix epoch */
    int64_t amount_fen;      /* what this event moves: drawn, repaid, written off */
    int64_t outstanding_fen; /* the loan's outstanding principal after it */
    int64_t credit_limit_fen;
    int32_t days_past_due;
    int64_t past_due_fen;
    char currency[LW_CURRENCY_LEN + 1];
    bool has_annual_income;
    int64_t annual_income_fen;
    bool has_term_months;
    int32_t term_months;
} lw_event_t;

typedef enum lw_severity {
    LW_SEVERITY_INFO = 0,
    LW_SEVERITY_WARNING,
    LW_SEVERITY_CRITICAL,
    LW_SEVERITY__CNT
} lw_severity_t;

typedef struct lw_alert {
    char alert_id[LW_ID_MAX + 1];
    char borrower_id[LW_BORROWER_ID_LEN + 1];
    char rule_id[LW_ID_MAX + 1];
    int32_t rule_version;
    lw_severity_t severity;
    char reason[LW_TEXT_MAX];
    int64_t total_outstanding_fen;
    int32_t active_lenders;
    int32_t active_loans;
    int32_t window_count; /* the rule's windowed count, 0 when it has none */
    int64_t window_ms;    /* that window's length, 0 when none */
    bool has_annual_income;
    int64_t annual_income_fen;
    int64_t limit; /* the threshold crossed: fen for amounts, a count otherwise */
    char trigger_event_id[LW_ID_MAX + 1];
    char trigger_platform_id[LW_ID_MAX + 1];
    char trigger_lender_id[LW_ID_MAX + 1];
    int64_t raised_at; /* event time of the trigger, ms since the epoch */
} lw_alert_t;

/* Why an institution looked a borrower up (schemas/CreditInquiry.avsc). The
 * first three are approval purposes: counted in the exposure's inquiry
 * figures and by the inquiry_spree rule; the others are shown, never counted. */
typedef enum lw_inquiry_purpose {
    LW_PURPOSE_LOAN_APPROVAL = 0,
    LW_PURPOSE_CREDIT_CARD_APPROVAL,
    LW_PURPOSE_GUARANTEE_REVIEW,
    LW_PURPOSE_POST_LOAN_MANAGEMENT,
    LW_PURPOSE_BORROWER_REQUEST,
    LW_PURPOSE__CNT
} lw_inquiry_purpose_t;

static inline bool lw_purpose_is_approval(lw_inquiry_purpose_t p)
{
    return p <= LW_PURPOSE_GUARANTEE_REVIEW;
}

/* One recorded look-up (schemas/CreditInquiry.avsc). */
typedef struct lw_inquiry {
    char inquiry_id[LW_ID_MAX + 1];
    char borrower_id[LW_BORROWER_ID_LEN + 1];
    char institution_id[LW_ID_MAX + 1];
    lw_inquiry_purpose_t purpose;
    int64_t inquired_at; /* ms since the epoch */
} lw_inquiry_t;

/* Symbol names ("DRAWDOWN", "REVOLVING", "CRITICAL"); NULL when out of range. */
LW_API const char *lw_event_type_name(lw_event_type_t t);
LW_API const char *lw_product_name(lw_product_t p);
LW_API const char *lw_severity_name(lw_severity_t s);
LW_API const char *lw_purpose_name(lw_inquiry_purpose_t p);
/* Parse a symbol name; returns -1 when unknown. */
LW_API int lw_event_type_parse(const char *name);
LW_API int lw_product_parse(const char *name);
LW_API int lw_severity_parse(const char *name);
LW_API int lw_purpose_parse(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_EVENT_H */
