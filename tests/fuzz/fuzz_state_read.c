/*
 * fuzz_state_read.c - libFuzzer target for reading a borrower's state as
 * loanwire-query does (consumers/state/src/state.c): any bytes of b:{..}
 * decode or are refused, and what decodes is summed (lw_state_derive(),
 * what lw_state_read() reports) with checked arithmetic: an overflow is an
 * error, never undefined behaviour; counts are consistent (distinct lenders
 * <= entries, active lenders and platforms <= active loans, no total below 0).
 */
#include "state_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lw_bstate_t s = {0};
    lw_borrower_state_t out;
    char err[256];
    memset(&out, 0, sizeof out);
    if (lw_bstate_decode(&s, data, size) == LW_OK) {
        lw_err_t e = lw_state_derive(&s, &out, "b:{fuzz}", err, sizeof err);
        if (e == LW_OK) {
            if (out.total_outstanding_fen < 0 || out.past_due_fen < 0 ||
                out.active_lenders > out.active_loans || out.active_platforms > out.active_loans ||
                (size_t)out.active_loans > s.n_loans)
                abort();
            for (int k = 0; k < LW_WIN__CNT; k++)
                if (out.distinct_lenders[k] > out.new_loans[k] + out.applications[k] ||
                    (size_t)(out.new_loans[k] + out.applications[k]) > s.n_win ||
                    (k > 0 && out.new_loans[k] < out.new_loans[k - 1]))
                    abort();
        } else if (e != LW_ERR_REDIS || !strstr(err, "exceeds")) {
            abort();
        }
    }
    lw_bstate_free(&s);
    return 0;
}
