/*
 * route.c - request routing and parameter parsing for loanwire-query.
 *
 * Pure string work, no sockets and no Redis, so the unit tests cover every
 * branch. Anything that is not exactly one of the documented paths is 404;
 * a borrower id of the wrong form on the exposure path is 400.
 */
#include "loanwire/id.h"
#include "loanwire/query.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LW_EXPOSURE_PREFIX "/v1/borrowers/"
#define LW_EXPOSURE_SUFFIX "/exposure"

lw_route_t lw_query_route(const char *path, char borrower_id[LW_BORROWER_ID_LEN + 1], bool *bad_id)
{
    size_t plen = strlen(LW_EXPOSURE_PREFIX), slen = strlen(LW_EXPOSURE_SUFFIX), len, idlen;
    char id[LW_BORROWER_ID_LEN + 1];

    *bad_id = false;
    if (borrower_id)
        borrower_id[0] = '\0';
    if (!path)
        return LW_ROUTE_NOT_FOUND;
    if (strcmp(path, "/healthz") == 0)
        return LW_ROUTE_HEALTHZ;
    if (strcmp(path, "/metrics") == 0)
        return LW_ROUTE_METRICS;
    if (strcmp(path, "/v1/alerts") == 0)
        return LW_ROUTE_ALERTS;
    len = strlen(path);
    if (len < plen + slen || strncmp(path, LW_EXPOSURE_PREFIX, plen) != 0 ||
        strcmp(path + len - slen, LW_EXPOSURE_SUFFIX) != 0)
        return LW_ROUTE_NOT_FOUND;
    idlen = len - plen - slen;
    /* A '/' inside the id segment means some other, unknown path. */
    if (memchr(path + plen, '/', idlen))
        return LW_ROUTE_NOT_FOUND;
    if (idlen != LW_BORROWER_ID_LEN) {
        *bad_id = true;
        return LW_ROUTE_EXPOSURE;
    }
    memcpy(id, path + plen, idlen);
    id[idlen] = '\0';
    if (!lw_borrower_id_is_valid(id)) {
        *bad_id = true;
        return LW_ROUTE_EXPOSURE;
    }
    if (borrower_id)
        memcpy(borrower_id, id, idlen + 1);
    return LW_ROUTE_EXPOSURE;
}

/* Parses a non-negative decimal int64 spanning all of s[0..len). */
static bool lw_parse_i64(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;

    if (len == 0 || len > 18)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

lw_err_t lw_alerts_params_parse(const char *since, const char *rule, const char *limit,
                                lw_alerts_params_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof *out);
    out->limit = LW_QUERY_ALERTS_DEFAULT;
    out->since_stream = -1;

    if (since) {
        const char *dash = strchr(since, '-');
        int64_t ms, seq = 0;

        if (dash) {
            /* "<ms>-<seq>:<slot>": the stream_id of an alert read from a
             * cluster, where two slots' streams can hold the same entry id */
            const char *colon = strchr(dash + 1, ':');
            size_t seqlen = colon ? (size_t)(colon - dash - 1) : strlen(dash + 1);
            int64_t slot = -1;
            if (colon && (!lw_parse_i64(colon + 1, strlen(colon + 1), &slot) || slot >= 16384)) {
                snprintf(errstr, errstr_size,
                         "since: expected milliseconds or a stream id <ms>-<seq>[:<slot>]");
                return LW_ERR_INVALID_ARG;
            }
            out->since_stream = (int)slot;
            if (!lw_parse_i64(since, (size_t)(dash - since), &ms) ||
                !lw_parse_i64(dash + 1, seqlen, &seq)) {
                snprintf(errstr, errstr_size,
                         "since: expected milliseconds or a stream id <ms>-<seq>");
                return LW_ERR_INVALID_ARG;
            }
            out->since_exclusive = true;
        } else if (!lw_parse_i64(since, strlen(since), &ms)) {
            snprintf(errstr, errstr_size, "since: expected milliseconds or a stream id <ms>-<seq>");
            return LW_ERR_INVALID_ARG;
        }
        snprintf(out->since_id, sizeof out->since_id, "%lld-%lld", (long long)ms, (long long)seq);
        out->has_since = true;
    }
    if (rule) {
        size_t len = strlen(rule);
        if (len == 0 || len > LW_ID_MAX) {
            snprintf(errstr, errstr_size, "rule: must be 1 to %d characters", LW_ID_MAX);
            return LW_ERR_INVALID_ARG;
        }
        for (size_t i = 0; i < len; i++) {
            if (!isalnum((unsigned char)rule[i]) && !strchr("_-.:", rule[i])) {
                snprintf(errstr, errstr_size,
                         "rule: unexpected character (allowed A-Z a-z 0-9 _ - . :)");
                return LW_ERR_INVALID_ARG;
            }
        }
        memcpy(out->rule, rule, len + 1);
        out->has_rule = true;
    }
    if (limit) {
        int64_t v;
        if (!lw_parse_i64(limit, strlen(limit), &v) || v < 1 || v > LW_QUERY_ALERTS_MAX) {
            snprintf(errstr, errstr_size, "limit: expected an integer from 1 to %d",
                     LW_QUERY_ALERTS_MAX);
            return LW_ERR_INVALID_ARG;
        }
        out->limit = (int)v;
    }
    return LW_OK;
}

const int lw_query_status_codes[LW_QUERY_STATUS_SLOTS] = {200, 400, 401, 404, 405,
                                                          413, 414, 500, 503, 0};

int lw_query_status_slot(int status)
{
    for (int i = 0; i < LW_QUERY_STATUS_SLOTS - 1; i++)
        if (lw_query_status_codes[i] == status)
            return i;
    return LW_QUERY_STATUS_SLOTS - 1;
}

int lw_query_purpose_parse(const char *s)
{
    return lw_purpose_parse(s);
}
