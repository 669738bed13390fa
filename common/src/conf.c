/*
 * conf.c - configuration shared by every program: librdkafka properties
 * (file and -X key=value), the Redis URL, and defaults from the environment.
 *
 * The properties file follows kcat -F: one key=value per line, '#' starts a
 * comment line, blank lines are skipped, spaces around key and value are
 * trimmed. Errors name the place as "file:line: reason" so a person can fix
 * the file without guessing.
 */
#include "loanwire/conf.h"
#include "loanwire/log.h"
#include "text_int.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *lw_conf_default_bootstrap(void)
{
    const char *s = getenv("LOANWIRE_BOOTSTRAP");
    return s && *s ? s : LW_DEFAULT_BOOTSTRAP;
}

const char *lw_conf_default_redis(void)
{
    const char *s = getenv("LOANWIRE_REDIS");
    return s && *s ? s : LW_DEFAULT_REDIS;
}

/* Trims ASCII white space at both ends, in place; returns the new start. */
static char *lw_trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Splits "key=value" held in buf (modified), trimming both sides. */
static lw_err_t lw_conf_apply(rd_kafka_conf_t *conf, char *buf, char *errstr, size_t errstr_size)
{
    char *eq = strchr(buf, '=');
    char *key, *val;
    char rderr[512];

    if (!eq) {
        snprintf(errstr, errstr_size, "expected key=value, got \"%.100s\"", lw_trim(buf));
        return LW_ERR_CONFIG;
    }
    *eq = '\0';
    key = lw_trim(buf);
    val = lw_trim(eq + 1);
    if (!*key) {
        snprintf(errstr, errstr_size, "empty key before '='");
        return LW_ERR_CONFIG;
    }
    if (rd_kafka_conf_set(conf, key, val, rderr, sizeof rderr) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "%s", rderr);
        return LW_ERR_CONFIG;
    }
    return LW_OK;
}

lw_err_t lw_conf_set_kv(rd_kafka_conf_t *conf, const char *kv, char *errstr, size_t errstr_size)
{
    char *copy;
    lw_err_t err;

    if (!conf || !kv) {
        snprintf(errstr, errstr_size, "no configuration or key=value given");
        return LW_ERR_INVALID_ARG;
    }
    copy = strdup(kv);
    if (!copy) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    err = lw_conf_apply(conf, copy, errstr, errstr_size);
    free(copy);
    return err;
}

lw_err_t lw_conf_load_file(rd_kafka_conf_t *conf, const char *path, char *errstr,
                           size_t errstr_size)
{
    FILE *fp;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    lw_err_t err = LW_OK;
    struct stat st;

    if (!conf || !path) {
        snprintf(errstr, errstr_size, "no configuration or file given");
        return LW_ERR_INVALID_ARG;
    }
    fp = fopen(path, "r");
    if (!fp) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return LW_ERR_IO;
    }
    /* The file holds sasl.password and ssl.key.password: refused, like the
     * token and id-key files, when group or others have any access to it
     * (fstat on the open file: the mode checked is the file read). A pipe
     * (-F <(...)) is 0600 and passes. */
    if (fstat(fileno(fp), &st) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        fclose(fp);
        return LW_ERR_IO;
    }
    if (st.st_mode & 077) {
        snprintf(errstr, errstr_size,
                 "%s: properties file is accessible by group or others (mode %03o) and may "
                 "hold passwords; run chmod 600 %s",
                 path, (unsigned)(st.st_mode & 0777), path);
        fclose(fp);
        return LW_ERR_CONFIG;
    }
    while ((n = getline(&line, &linecap, fp)) >= 0) {
        char reason[512];
        char *s;

        lineno++;
        if ((size_t)n != strlen(line)) {
            snprintf(errstr, errstr_size, "%s:%lu: NUL byte in line", path, lineno);
            err = LW_ERR_PARSE;
            break;
        }
        s = lw_trim(line);
        if (!*s || *s == '#')
            continue;
        err = lw_conf_apply(conf, s, reason, sizeof reason);
        if (err) {
            snprintf(errstr, errstr_size, "%s:%lu: %s", path, lineno, reason);
            break;
        }
    }
    if (!err && ferror(fp)) {
        snprintf(errstr, errstr_size, "%s:%lu: read error: %s", path, lineno, strerror(errno));
        err = LW_ERR_IO;
    }
    free(line);
    fclose(fp);
    return err;
}

/* librdkafka levels are syslog(3) levels. */
static void lw_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    lw_log_level_t l = level <= 3   ? LW_LOG_ERROR
                       : level == 4 ? LW_LOG_WARN
                       : level <= 6 ? LW_LOG_INFO
                                    : LW_LOG_DEBUG;
    (void)rk;
    lw_log(l, "rdkafka %s: %s", fac, buf);
}

void lw_conf_route_logs(rd_kafka_conf_t *conf)
{
    if (conf)
        rd_kafka_conf_set_log_cb(conf, lw_rdkafka_log);
}

/* ---- Redis URL ------------------------------------------------------------- */

/* Parses a decimal integer in [lo, hi] from s[0..len). */
static int lw_parse_int(const char *s, size_t len, long lo, long hi, long *out)
{
    long v = 0;
    size_t i;

    if (len == 0 || len > 10)
        return -1;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* The message names the URL without its password: errors end up in logs. */
static lw_err_t lw_url_fail(char *errstr, size_t errstr_size, const char *url, const char *why)
{
    char safe[256];

    snprintf(errstr, errstr_size, "redis URL \"%s\": %s",
             lw_redis_url_redact(url, safe, sizeof safe), why);
    return LW_ERR_CONFIG;
}

const char *lw_redis_url_redact(const char *url, char *out, size_t cap)
{
    const char *auth, *at = NULL, *colon;

    if (!out || cap == 0)
        return "";
    if (!url) {
        snprintf(out, cap, "(none)");
        return out;
    }
    if (strncmp(url, "unix://", 7) == 0) { /* no credentials in this form */
        snprintf(out, cap, "%s", url);
        return out;
    }
    auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    /* The last '@' anywhere: a mistyped password may hold '/' or '?', and an
     * error message about that very URL must not print it either. */
    for (const char *c = auth; *c; c++)
        if (*c == '@')
            at = c;
    if (!at) {
        snprintf(out, cap, "%s", url);
        return out;
    }
    colon = memchr(auth, ':', (size_t)(at - auth));
    /* user:password@ - the user name is not a secret, but only a first
     * segment without '@' is surely one: in "redis://@@pw@h:/@x" the parser
     * takes "@@pw" for the password (found by fuzz_redis_url) */
    if (colon && !memchr(auth, '@', (size_t)(colon - auth)))
        snprintf(out, cap, "%.*s:***%s", (int)(colon - url), url, at);
    else /* password@ alone, or no telling: all of it */
        snprintf(out, cap, "%.*s***%s", (int)(auth - url), url, at);
    return out;
}

const char *lw_redis_url_format(const lw_redis_url_t *u, char *out, size_t cap)
{
    if (!out || cap == 0)
        return "";
    if (!u)
        snprintf(out, cap, "(none)");
    else if (u->path[0])
        snprintf(out, cap, "unix://%s?db=%d", u->path, u->db);
    else
        snprintf(out, cap, "redis://%s%s%s%s%s%s:%d/%d", u->user, u->password[0] ? ":***" : "",
                 u->user[0] || u->password[0] ? "@" : "", strchr(u->host, ':') ? "[" : "", u->host,
                 strchr(u->host, ':') ? "]" : "", u->port, u->db);
    return out;
}

/* Percent-decodes s[0..len) into out (cap bytes, terminated): RFC 3986
 * userinfo, so a password may hold ':', '@', '/' or any byte as %XX. A '%'
 * without two hex digits, a decoded NUL (it would cut the string short) or
 * a result that does not fit is refused with why set. */
static int lw_pct_decode(const char *s, size_t len, char *out, size_t cap, const char **why)
{
    size_t j = 0;

    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= len || lw_hex_digit((unsigned char)s[i + 1]) < 0 ||
                lw_hex_digit((unsigned char)s[i + 2]) < 0) {
                *why = "'%' must be followed by two hex digits (percent-encoding)";
                return -1;
            }
            c = lw_hex_digit((unsigned char)s[i + 1]) << 4 | lw_hex_digit((unsigned char)s[i + 2]);
            i += 2;
            if (c == 0) {
                *why = "%00 (a NUL byte) is not allowed";
                return -1;
            }
        }
        if (j + 1 >= cap) {
            *why = "too long";
            return -1;
        }
        out[j++] = (char)c;
    }
    out[j] = '\0';
    return 0;
}

/* unix:///path/to/sock[?db=N] */
static lw_err_t lw_redis_url_unix(const char *url, const char *rest, lw_redis_url_t *out,
                                  char *errstr, size_t errstr_size)
{
    const char *q = strchr(rest, '?');
    size_t plen = q ? (size_t)(q - rest) : strlen(rest);

    if (plen == 0 || rest[0] != '/')
        return lw_url_fail(errstr, errstr_size, url, "expected unix:///absolute/path");
    if (plen >= sizeof out->path)
        return lw_url_fail(errstr, errstr_size, url, "socket path too long");
    memcpy(out->path, rest, plen);
    out->path[plen] = '\0';
    if (q) {
        long db;
        if (strncmp(q + 1, "db=", 3) != 0)
            return lw_url_fail(errstr, errstr_size, url, "only ?db=N is understood");
        if (lw_parse_int(q + 4, strlen(q + 4), 0, INT_MAX, &db))
            return lw_url_fail(errstr, errstr_size, url, "db must be a non-negative integer");
        out->db = (int)db;
    }
    return LW_OK;
}

static lw_err_t lw_redis_url_parse_in(const char *url, lw_redis_url_t *out, char *errstr,
                                      size_t errstr_size);

lw_err_t lw_redis_url_parse(const char *url, lw_redis_url_t *out, char *errstr, size_t errstr_size)
{
    lw_err_t err = lw_redis_url_parse_in(url, out, errstr, errstr_size);
    if (err != LW_OK && out) /* no password left behind in a URL that failed */
        memset(out, 0, sizeof *out);
    return err;
}

static lw_err_t lw_redis_url_parse_in(const char *url, lw_redis_url_t *out, char *errstr,
                                      size_t errstr_size)
{
    const char *p, *at, *slash, *hostend, *colon;
    size_t hlen;
    long v;

    if (!url || !out) {
        snprintf(errstr, errstr_size, "no redis URL given");
        return LW_ERR_INVALID_ARG;
    }
    memset(out, 0, sizeof *out);
    out->port = 6379;

    if (strncmp(url, "unix://", 7) == 0)
        return lw_redis_url_unix(url, url + 7, out, errstr, errstr_size);
    if (strncmp(url, "redis://", 8) != 0)
        return lw_url_fail(errstr, errstr_size, url,
                           "expected redis://[[user]:password@]host[:port][/db] or unix:///path");
    p = url + 8;

    /* Authority ends at the first '/', the userinfo at the last '@' before it
     * (a password may itself contain '@'). */
    slash = strchr(p, '/');
    hostend = slash ? slash : p + strlen(p);
    at = NULL;
    for (const char *c = p; c < hostend; c++)
        if (*c == '@')
            at = c;
    if (at) {
        /* user:password@ (a Redis 6 ACL user: AUTH user password), :password@
         * (the default user), or password@ alone (as before ACLs; a user
         * without a password has nothing to AUTH with). Both parts are
         * percent-decoded. */
        const char *pc = memchr(p, ':', (size_t)(at - p));
        const char *pw = pc ? pc + 1 : p, *why = NULL;
        char msg[128];

        if (pc && lw_pct_decode(p, (size_t)(pc - p), out->user, sizeof out->user, &why) != 0) {
            snprintf(msg, sizeof msg, "user name: %s", why);
            return lw_url_fail(errstr, errstr_size, url, msg);
        }
        if (lw_pct_decode(pw, (size_t)(at - pw), out->password, sizeof out->password, &why) != 0) {
            snprintf(msg, sizeof msg, "password: %s", why);
            return lw_url_fail(errstr, errstr_size, url, msg);
        }
        if (out->user[0] && !out->password[0])
            return lw_url_fail(errstr, errstr_size, url, "a user name needs a password");
        p = at + 1;
    }

    if (*p == '[') { /* [IPv6]:port */
        const char *rb = memchr(p, ']', (size_t)(hostend - p));
        if (!rb)
            return lw_url_fail(errstr, errstr_size, url, "unterminated '[' in host");
        hlen = (size_t)(rb - p - 1);
        if (hlen == 0 || hlen >= sizeof out->host)
            return lw_url_fail(errstr, errstr_size, url, "bad host");
        memcpy(out->host, p + 1, hlen);
        out->host[hlen] = '\0';
        colon = rb + 1 < hostend && rb[1] == ':' ? rb + 1 : NULL;
        if (!colon && rb + 1 != hostend)
            return lw_url_fail(errstr, errstr_size, url, "junk after ']' in host");
    } else {
        colon = memchr(p, ':', (size_t)(hostend - p));
        hlen = (size_t)((colon ? colon : hostend) - p);
        if (hlen == 0)
            return lw_url_fail(errstr, errstr_size, url, "missing host");
        if (hlen >= sizeof out->host)
            return lw_url_fail(errstr, errstr_size, url, "host too long");
        memcpy(out->host, p, hlen);
        out->host[hlen] = '\0';
    }
    if (colon) {
        if (lw_parse_int(colon + 1, (size_t)(hostend - colon - 1), 1, 65535, &v))
            return lw_url_fail(errstr, errstr_size, url, "port must be an integer 1..65535");
        out->port = (int)v;
    }
    if (slash && slash[1]) {
        if (lw_parse_int(slash + 1, strlen(slash + 1), 0, INT_MAX, &v))
            return lw_url_fail(errstr, errstr_size, url, "db must be a non-negative integer");
        out->db = (int)v;
    }
    return LW_OK;
}
