/*
 * fuzz_snapshot.c - libFuzzer target for loanwire-reconcile's snapshot line
 * parser: any bytes parse or fail with a field and a reason, never crash;
 * what parses is within the documented bounds, and the discrepancy line made
 * from it fits the documented 1024 bytes.
 */
#include "loanwire/reconcile.h"
#include "loanwire/validate.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lw_snap_loan_t l;
    lw_field_error_t fe = {{0}, {0}};
    char buf[1024];
    const char *platform = size && (data[0] & 1) ? "P" : NULL;

    if (lw_snap_parse((const char *)data, size, platform, &l, &fe) != LW_OK) {
        if (!fe.reason[0] || l.loan_id[0])
            abort(); /* an error without a reason, or a half-filled loan */
        return 0;
    }
    if (l.sequence < 1 || l.sequence >= LW_SEQUENCE_LIMIT || l.outstanding_fen < 0 ||
        l.outstanding_fen > LW_MAX_FEN || !l.platform_id[0] || !l.loan_id[0] ||
        strlen(l.borrower_id) != LW_BORROWER_ID_LEN ||
        (platform && strcmp(platform, l.platform_id)))
        abort();
    lw_loan_state_t b;
    memset(&b, 0, sizeof b);
    memcpy(b.platform_id, l.platform_id, sizeof b.platform_id);
    memcpy(b.loan_id, l.loan_id, sizeof b.loan_id);
    memcpy(b.lender_id, l.loan_id, sizeof b.lender_id);
    b.sequence = l.sequence;
    b.outstanding_fen = l.outstanding_fen;
    b.updated_at = INT64_MIN;
    if (lw_recon_diff_json(lw_recon_compare(&l, &b), l.platform_id, l.borrower_id, l.loan_id, &l,
                           UINT64_MAX, &b, buf, sizeof buf) < 0)
        abort();
    return 0;
}
