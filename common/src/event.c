/*
 * event.c - symbol names of the enums in event.h. Their order is the Avro
 * enum order in schemas/ (*.avsc), so the index is also the wire value.
 */
#include "loanwire/event.h"

#include "codec_int.h"

#include <string.h>

const char *const lw_event_type_syms[LW_EVENT__CNT] = {
    "APPLICATION", "CREDIT_LINE", "DRAWDOWN", "REPAYMENT",
    "DELINQUENCY", "WRITE_OFF",   "CLOSURE",  "CORRECTION",
};
const char *const lw_product_syms[LW_PRODUCT__CNT] = {"REVOLVING", "INSTALLMENT", "OTHER"};
const char *const lw_severity_syms[LW_SEVERITY__CNT] = {"INFO", "WARNING", "CRITICAL"};
const char *const lw_purpose_syms[LW_PURPOSE__CNT] = {
    "LOAN_APPROVAL",        "CREDIT_CARD_APPROVAL", "GUARANTEE_REVIEW",
    "POST_LOAN_MANAGEMENT", "BORROWER_REQUEST",
};

const char *lw_purpose_name(lw_inquiry_purpose_t p)
{
    return (unsigned)p < LW_PURPOSE__CNT ? lw_purpose_syms[p] : NULL;
}

const char *lw_event_type_name(lw_event_type_t t)
{
    return (unsigned)t < LW_EVENT__CNT ? lw_event_type_syms[t] : NULL;
}

const char *lw_product_name(lw_product_t p)
{
    return (unsigned)p < LW_PRODUCT__CNT ? lw_product_syms[p] : NULL;
}

const char *lw_severity_name(lw_severity_t s)
{
    return (unsigned)s < LW_SEVERITY__CNT ? lw_severity_syms[s] : NULL;
}

static int lw_sym_parse(const char *const *names, int n, const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

int lw_event_type_parse(const char *name)
{
    return lw_sym_parse(lw_event_type_syms, LW_EVENT__CNT, name);
}

int lw_product_parse(const char *name)
{
    return lw_sym_parse(lw_product_syms, LW_PRODUCT__CNT, name);
}

int lw_severity_parse(const char *name)
{
    return lw_sym_parse(lw_severity_syms, LW_SEVERITY__CNT, name);
}

int lw_purpose_parse(const char *name)
{
    return lw_sym_parse(lw_purpose_syms, LW_PURPOSE__CNT, name);
}
