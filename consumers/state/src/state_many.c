/*
 * state_many.c - lw_state_read_many(): borrowers read a batch at a time.
 *
 * A reconciliation reads millions of borrowers; one lw_state_read() each
 * would pay a round trip per borrower and a fresh lw:strings look-up per
 * borrower. Here a batch holds one group per borrower (GET b:{id}, and
 * HKEYS a:{id} unless the caller needs no alerts) on the borrower's slot;
 * lw_rcluster writes the groups of every master before reading any reply,
 * so a batch costs one round trip per master whatever its size, on a
 * single Redis and on a cluster alike. The replies are decoded by the same
 * lw_state_from_replies() lw_state_read() uses, so there is one decoder;
 * the reader's own dictionary keeps the platform and lender names across
 * batches (an lw:strings id never changes its name).
 */
#include "state_int.h"

#include "loanwire/id.h"

struct lw_state_reader {
    lw_rcluster_t *cl;
    lw_rcluster_batch_t *bat;
    lw_dict_t *dict;
    unsigned flags;
};

lw_state_reader_t *lw_state_reader_new(lw_rcluster_t *cl, unsigned flags)
{
    lw_state_reader_t *r = calloc(1, sizeof *r);
    if (!r || !cl)
        goto fail;
    r->cl = cl;
    r->flags = flags;
    if (!(r->bat = lw_rcluster_batch_new(cl)) || !(r->dict = lw_dict_new()))
        goto fail;
    return r;
fail:
    lw_state_reader_destroy(r);
    return NULL;
}

void lw_state_reader_destroy(lw_state_reader_t *r)
{
    if (!r)
        return;
    lw_rcluster_batch_destroy(r->bat);
    lw_dict_destroy(r->dict);
    free(r);
}

static void clear_all(lw_borrower_state_t *out, bool *found, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        lw_borrower_state_clear(&out[i]);
        found[i] = false;
    }
}

lw_err_t lw_state_read_many(lw_state_reader_t *r, const char *const *ids, size_t n,
                            lw_borrower_state_t *out, bool *found, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        found[i] = false;
    }
    for (size_t i = 0; i < n; i++)
        if (!ids[i] || !lw_borrower_id_is_valid(ids[i])) {
            snprintf(errstr, errstr_size, "borrower id '%s': expected 22 base64url characters",
                     ids[i] ? ids[i] : "(null)");
            return LW_ERR_INVALID_ARG;
        }
    if (n == 0)
        return LW_OK;
    bool alerts = !(r->flags & LW_STATE_READ_NO_ALERTS);
    lw_rcluster_batch_reset(r->bat);
    lw_rcluster_err_t ce = LW_RCLUSTER_OK;
    char why[256] = "";
    for (size_t i = 0; i < n && ce == LW_RCLUSTER_OK; i++) {
        char key[LW_STATE_KEY_MAX], akey[LW_STATE_KEY_MAX];
        size_t kl = lw_borrower_key('b', ids[i], key);
        size_t al = lw_borrower_key('a', ids[i], akey);
        const char *argv[2] = {"GET", key};
        size_t argl[2] = {3, kl};
        if (lw_rcluster_batch_group(r->bat, lw_rcluster_keyslot(key, kl)) < 0) {
            ce = LW_RCLUSTER_ERR_NOMEM;
            break;
        }
        ce = lw_rcluster_batch_append_argv(r->bat, 2, argv, argl);
        if (ce == LW_RCLUSTER_OK && alerts) {
            argv[0] = "HKEYS";
            argv[1] = akey;
            argl[0] = 5;
            argl[1] = al;
            ce = lw_rcluster_batch_append_argv(r->bat, 2, argv, argl);
        }
    }
    if (ce == LW_RCLUSTER_OK &&
        (ce = lw_rcluster_batch_send(r->bat, why, sizeof why)) == LW_RCLUSTER_OK)
        ce = lw_rcluster_batch_recv(r->bat, why, sizeof why);
    if (ce != LW_RCLUSTER_OK) {
        snprintf(errstr, errstr_size, "Redis GET of %zu borrowers: %s", n,
                 why[0] ? why : lw_rcluster_err2str(ce));
        lw_rcluster_batch_reset(r->bat);
        return ce == LW_RCLUSTER_ERR_NOMEM ? LW_ERR_NOMEM : LW_ERR_REDIS;
    }
    lw_err_t err = LW_OK;
    for (size_t i = 0; i < n && err == LW_OK; i++) {
        const redisReply *g = lw_rcluster_group_reply(r->bat, i, 0);
        const redisReply *a = alerts ? lw_rcluster_group_reply(r->bat, i, 1) : NULL;
        if (!g || (alerts && !a)) {
            snprintf(errstr, errstr_size, "Redis GET of borrower %s: no reply", ids[i]);
            err = LW_ERR_REDIS;
            break;
        }
        err = lw_state_from_replies(r->dict, r->cl, ids[i], g, a, &out[i], &found[i], errstr,
                                    errstr_size);
    }
    lw_rcluster_batch_reset(r->bat);
    if (err != LW_OK)
        clear_all(out, found, n);
    return err;
}
