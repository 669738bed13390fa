/*
 * fuzz_redis_url.c - libFuzzer target for the Redis URL (common/src/conf.c):
 * lw_redis_url_parse, lw_redis_url_redact and lw_redis_url_format. A refused
 * URL says why, leaves no password behind in the output structure, and its
 * message does not hold the password part of the URL; a parsed one has a
 * port 1..65535 and terminated fields; the log form of a parsed URL does
 * not depend on its password, and the redacted raw URL does not hold it.
 */
#include "loanwire/conf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The password as it is written in a URL that parsed: after the first ':'
 * of the userinfo (or all of it), which ends at the last '@' before the
 * first '/'. *start and *len locate it in url; false when there is none. */
static bool raw_password(const char *url, size_t *start, size_t *len)
{
    const char *p, *slash, *end, *at = NULL, *colon;

    if (strncmp(url, "redis://", 8) != 0)
        return false;
    p = url + 8;
    slash = strchr(p, '/');
    end = slash ? slash : p + strlen(p);
    for (const char *c = p; c < end; c++)
        if (*c == '@')
            at = c;
    if (!at)
        return false;
    colon = memchr(p, ':', (size_t)(at - p));
    *start = (size_t)((colon ? colon + 1 : p) - url);
    *len = (size_t)(at - url) - *start;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url, err[512], out[1024];
    lw_redis_url_t u;

    url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';

    lw_redis_url_redact(url, out, sizeof out);
    if (!memchr(out, '\0', sizeof out))
        abort();
    err[0] = '\0';
    if (lw_redis_url_parse(url, &u, err, sizeof err) != LW_OK) {
        if (!err[0] || u.password[0] || u.user[0])
            abort();
    } else {
        if (!memchr(u.host, '\0', sizeof u.host) || !memchr(u.path, '\0', sizeof u.path) ||
            !memchr(u.user, '\0', sizeof u.user) || !memchr(u.password, '\0', sizeof u.password))
            abort();
        if (!u.path[0] && (u.port < 1 || u.port > 65535 || !u.host[0]))
            abort();
        if (u.db < 0 || (u.user[0] && !u.password[0]))
            abort();
        if (u.password[0]) {
            /* The log form does not depend on the password at all. */
            lw_redis_url_t v = u;
            char out2[1024];
            snprintf(v.password, sizeof v.password, "x");
            lw_redis_url_format(&u, out, sizeof out);
            lw_redis_url_format(&v, out2, sizeof out2);
            if (strcmp(out, out2) != 0)
                abort();
        }
    }
    {
        size_t ps, pl;
        if (raw_password(url, &ps, &pl) && pl >= 4) {
            /* The raw form and any error message: the password as written
             * must not be in them, unless it also occurs in the rest of the URL. */
            char *pw = strndup(url + ps, pl), *rest = malloc(size + 1);
            if (!pw || !rest)
                abort();
            memcpy(rest, url, ps);
            strcpy(rest + ps, url + ps + pl);
            lw_redis_url_redact(url, out, sizeof out);
            /* the URL as an error message quotes it: redis URL "<url>": <why>
             * (only that part; the fixed why text may spell a short password,
             * as "%00 (a NUL byte)..." spells "%00 ": regress-why-text) */
            char quoted[1024] = "";
            const char *q0 = strchr(err, '"'), *q1 = q0 ? strstr(q0 + 1, "\": ") : NULL;
            if (q0 && q1 && (size_t)(q1 - q0 - 1) < sizeof quoted)
                memcpy(quoted, q0 + 1, (size_t)(q1 - q0 - 1));
            /* ("*" excluded: the "***" the redaction writes may spell it) */
            if (!strstr(rest, pw) && !strchr(pw, '*') &&
                (strstr(out, pw) || strstr(quoted, pw) || (!q1 && strstr(err, pw))))
                abort();
            free(pw);
            free(rest);
        }
    }
    free(url);
    return 0;
}
