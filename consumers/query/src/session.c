/*
 * session.c - sign-in sessions of the dashboard.
 *
 * A browser signs in once with a bearer token and from then on sends a
 * cookie instead, so the token never has to live in the page (where a
 * script could read it) or in a URL. The cookie is 256 random bits; like the
 * tokens, only its SHA-256 is kept, so a memory dump holds nothing a browser
 * could replay. Sessions expire after LW_DASH_SESSION_TTL_S whatever their
 * use (the cookie's Max-Age says the same), and a full table drops its
 * oldest session rather than refusing a sign-in.
 *
 * Checks compare against every slot in constant time, as the token check
 * does: a lookup's duration says nothing about which digest matched.
 */
#include "dash_int.h"

#include "loanwire/log.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct lw_session {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    int64_t expires_us; /* lw_mono_us(); 0: free slot */
} lw_session_t;

struct lw_sessions_s {
    pthread_mutex_t mu;
    lw_session_t slot[LW_DASH_SESSIONS_MAX];
};

lw_sessions_t *lw_sessions_new(void)
{
    lw_sessions_t *s = calloc(1, sizeof *s);
    if (s)
        pthread_mutex_init(&s->mu, NULL);
    return s;
}

void lw_sessions_free(lw_sessions_t *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    OPENSSL_cleanse(s->slot, sizeof s->slot);
    free(s);
}

bool lw_cookie_get(const char *header, const char *name, char *out, size_t out_size)
{
    size_t nlen = strlen(name);
    const char *p = header;

    if (!header || out_size == 0)
        return false;
    /* "a=b; name=value; c=d" (RFC 6265 5.4); the first match wins. */
    while (*p) {
        const char *end;
        size_t vlen;

        while (*p == ' ' || *p == ';')
            p++;
        end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        if ((size_t)(end - p) > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            vlen = (size_t)(end - p) - nlen - 1;
            if (vlen >= out_size)
                return false;
            memcpy(out, p + nlen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = end;
    }
    return false;
}

/* The digest of the session id in a Cookie header; false when none. */
static bool lw_session_digest(const char *cookie_header, unsigned char d[SHA256_DIGEST_LENGTH])
{
    char id[80];

    if (!lw_cookie_get(cookie_header, LW_DASH_COOKIE, id, sizeof id) || strlen(id) != 64)
        return false;
    SHA256((const unsigned char *)id, 64, d);
    OPENSSL_cleanse(id, sizeof id);
    return true;
}

bool lw_sessions_create(lw_sessions_t *s, char id[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[32];
    int64_t now = lw_mono_us();
    size_t pick = 0;

    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return false;
    for (size_t i = 0; i < sizeof rnd; i++) {
        id[2 * i] = hex[rnd[i] >> 4];
        id[2 * i + 1] = hex[rnd[i] & 15];
    }
    id[64] = '\0';
    OPENSSL_cleanse(rnd, sizeof rnd);
    pthread_mutex_lock(&s->mu);
    /* A free or expired slot, else the one closest to expiring (the oldest:
     * every session lives the same time). */
    for (size_t i = 0; i < LW_DASH_SESSIONS_MAX; i++) {
        if (s->slot[i].expires_us <= now) {
            pick = i;
            break;
        }
        if (s->slot[i].expires_us < s->slot[pick].expires_us)
            pick = i;
    }
    SHA256((const unsigned char *)id, 64, s->slot[pick].digest);
    s->slot[pick].expires_us = now + (int64_t)LW_DASH_SESSION_TTL_S * 1000000;
    pthread_mutex_unlock(&s->mu);
    return true;
}

/* The slot holding digest d, or -1; looks at every slot whatever it finds. */
static long lw_session_find(lw_sessions_t *s, const unsigned char d[SHA256_DIGEST_LENGTH],
                            int64_t now)
{
    long found = -1;

    for (size_t i = 0; i < LW_DASH_SESSIONS_MAX; i++) {
        int same = CRYPTO_memcmp(s->slot[i].digest, d, SHA256_DIGEST_LENGTH) == 0;
        if (same && s->slot[i].expires_us > now)
            found = (long)i;
    }
    return found;
}

bool lw_sessions_check(lw_sessions_t *s, const char *cookie_header)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    long found;

    if (!s || !lw_session_digest(cookie_header, d))
        return false;
    pthread_mutex_lock(&s->mu);
    found = lw_session_find(s, d, lw_mono_us());
    pthread_mutex_unlock(&s->mu);
    return found >= 0;
}

void lw_sessions_end(lw_sessions_t *s, const char *cookie_header)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    long found;

    if (!s || !lw_session_digest(cookie_header, d))
        return;
    pthread_mutex_lock(&s->mu);
    found = lw_session_find(s, d, lw_mono_us());
    if (found >= 0)
        memset(&s->slot[found], 0, sizeof s->slot[found]);
    pthread_mutex_unlock(&s->mu);
}
