/*
 * snapshot.c - one line of a platform's snapshot into an lw_snap_loan_t.
 *
 * jansson parses the line (a flat object of five fields; no hot loop of the
 * bureau runs through here, and its integer handling already refuses
 * decimals and numbers past int64), then each field is checked so that an
 * error names the field and why, as loanwire-produce's do. Nothing is
 * guessed: a missing field, an unknown one, a decimal or a string where an
 * integer belongs is an error, never a default.
 */
#include "loanwire/id.h"
#include "loanwire/reconcile.h"
#include "loanwire/validate.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <string.h>

static lw_err_t fail(lw_field_error_t *ferr, lw_err_t err, const char *field, const char *fmt, ...)
{
    if (ferr) {
        va_list ap;
        snprintf(ferr->field, sizeof ferr->field, "%s", field);
        va_start(ap, fmt);
        vsnprintf(ferr->reason, sizeof ferr->reason, fmt, ap);
        va_end(ap);
    }
    return err;
}

static const char *const fields[] = {"platform_id", "loan_id", "borrower_id", "sequence",
                                     "outstanding_fen"};

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a decimal";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* An id of at most LW_ID_MAX printable ASCII bytes, as events' ids. */
static lw_err_t get_id(const json_t *o, const char *field, char *dst, lw_field_error_t *ferr)
{
    const json_t *v = json_object_get(o, field);
    if (!v)
        return fail(ferr, LW_ERR_VALIDATION, field, "missing");
    if (!json_is_string(v))
        return fail(ferr, LW_ERR_VALIDATION, field, "must be a string, not %s", type_name(v));
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0)
        return fail(ferr, LW_ERR_VALIDATION, field, "must not be empty");
    if (n > LW_ID_MAX)
        return fail(ferr, LW_ERR_VALIDATION, field, "longer than %d bytes (%zu)", LW_ID_MAX, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return fail(ferr, LW_ERR_VALIDATION, field,
                        "byte %zu is not printable ASCII (ids are; 0x%02x)", i,
                        (unsigned)(unsigned char)s[i]);
    memcpy(dst, s, n + 1);
    return LW_OK;
}

static lw_err_t get_int(const json_t *o, const char *field, int64_t min, int64_t max, int64_t *dst,
                        lw_field_error_t *ferr)
{
    const json_t *v = json_object_get(o, field);
    if (!v)
        return fail(ferr, LW_ERR_VALIDATION, field, "missing");
    if (!json_is_integer(v))
        return fail(ferr, LW_ERR_VALIDATION, field, "must be a JSON integer, not %s", type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return fail(ferr, LW_ERR_VALIDATION, field,
                    "%" PRId64 " is out of range (%" PRId64 " .. %" PRId64 ")", (int64_t)x, min,
                    max);
    *dst = (int64_t)x;
    return LW_OK;
}

lw_err_t lw_snap_parse(const char *line, size_t len, const char *platform, lw_snap_loan_t *out,
                       lw_field_error_t *ferr)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o)
        return fail(ferr, LW_ERR_PARSE, "", "not JSON: %s (column %d)", jerr.text, jerr.column);
    lw_err_t err = LW_OK;
    if (!json_is_object(o)) {
        err = fail(ferr, LW_ERR_PARSE, "", "must be a JSON object, not %s", type_name(o));
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        size_t i = 0;
        while (i < sizeof fields / sizeof *fields && strcmp(k, fields[i]) != 0)
            i++;
        if (i == sizeof fields / sizeof *fields) {
            err = fail(ferr, LW_ERR_VALIDATION, k,
                       "unknown field (a snapshot line has "
                       "platform_id, loan_id, borrower_id, "
                       "sequence, outstanding_fen)");
            goto done;
        }
    }
    if ((err = get_id(o, "platform_id", out->platform_id, ferr)) ||
        (err = get_id(o, "loan_id", out->loan_id, ferr)))
        goto done;
    const json_t *b = json_object_get(o, "borrower_id");
    if (!b || !json_is_string(b)) {
        err = b ? fail(ferr, LW_ERR_VALIDATION, "borrower_id", "must be a string, not %s",
                       type_name(b))
                : fail(ferr, LW_ERR_VALIDATION, "borrower_id", "missing");
        goto done;
    }
    if (!lw_borrower_id_is_valid(json_string_value(b))) {
        err = fail(ferr, LW_ERR_VALIDATION, "borrower_id",
                   "must be %d characters of base64url (a pseudonymous id, loanwire-id)",
                   LW_BORROWER_ID_LEN);
        goto done;
    }
    memcpy(out->borrower_id, json_string_value(b), LW_BORROWER_ID_LEN + 1);
    if ((err = get_int(o, "sequence", 1, LW_SEQUENCE_LIMIT - 1, &out->sequence, ferr)) ||
        (err = get_int(o, "outstanding_fen", 0, LW_MAX_FEN, &out->outstanding_fen, ferr)))
        goto done;
    if (platform && strcmp(out->platform_id, platform) != 0)
        err =
            fail(ferr, LW_ERR_VALIDATION, "platform_id",
                 "'%s' is not the platform reconciled (--platform %s)", out->platform_id, platform);
done:
    json_decref(o);
    if (err)
        memset(out, 0, sizeof *out);
    return err;
}
