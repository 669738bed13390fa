/*
 * gen_int.h - private state of the synthetic feed (gen.c only).
 *
 * The simulation keeps one pending "next action time" per borrower in a
 * 4-ary min-heap keyed by (time, borrower index); popping the top, running
 * that borrower's earliest action and pushing it back yields events in
 * event-time order, deterministically. Loans live in a pool addressed by
 * index (the pool may move when it grows), each with three timers: the due
 * cycle (instalments, statements, delinquency steps), an auxiliary one
 * (opening, draws, limit changes, early payoff, closure) and a pending
 * correction.
 */
#ifndef LOANWIRE_GEN_INT_H
#define LOANWIRE_GEN_INT_H

#include "gen.h"

#define GEN_NEVER       INT64_MAX
#define GEN_MAX_LOANS   10 /* concurrent loans and lines per borrower */
#define GEN_NO_LOAN     UINT32_MAX
#define GEN_MAX_LENDERS 128

typedef struct gen_product {
    const char *code; /* loan id prefix */
    lw_product_t type;
    int64_t min_fen, max_fen; /* limit (revolving) or principal (instalment) */
    const uint8_t *terms;     /* instalment terms in months, 0-terminated */
} gen_product_t;

typedef struct gen_platform {
    char id[24];
    bool knows_income;
    uint32_t weight;     /* relative market share */
    uint16_t own_lender; /* index into gen->lenders */
    uint16_t own_pct;    /* share of loans the platform's own lender funds */
    uint16_t partners[16];
    uint8_t npartners;
    uint8_t nproducts;
    gen_product_t products[2];
} gen_platform_t;

typedef enum gen_due_kind {
    GEN_DUE_PAY = 0, /* instalment or statement due: pay (or, revolving, decide then) */
    GEN_DUE_DQ,      /* next delinquency step (dpd 1, 30, 60, ...) */
    GEN_DUE_CURE,    /* pay everything past due */
    GEN_DUE_WOFF,    /* write off at 180 days */
} gen_due_kind_t;

typedef enum gen_aux_kind {
    GEN_AUX_OPEN = 0, /* DRAWDOWN (instalment) or CREDIT_LINE (revolving) */
    GEN_AUX_DRAW,     /* draw on a line */
    GEN_AUX_PAYOFF,   /* early full repayment */
    GEN_AUX_CLOSE,    /* CLOSURE */
} gen_aux_kind_t;

typedef struct gen_loan {
    uint64_t loan_no;
    int64_t seq;
    int64_t principal;   /* instalment: original principal; revolving: unused */
    int64_t outstanding; /* true outstanding principal */
    int64_t limit;       /* revolving: credit limit */
    int64_t minpay;      /* revolving: minimum payment fixed when it went past due */
    int64_t past_due;
    int64_t due0;  /* midnight of the first due date (ms) */
    int64_t t_due; /* next due-cycle action */
    int64_t t_aux; /* next auxiliary action */
    int64_t t_corr;
    int64_t corr_amount; /* amount the corrected report should have carried */
    int32_t apr_bp;
    int32_t dpd;
    uint16_t term;
    uint16_t k;       /* instalments settled / statements elapsed */
    uint16_t miss_k;  /* first missed index while delinquent */
    uint8_t dq_step;  /* index into the dpd ladder of the next DQ event */
    uint8_t due_kind; /* gen_due_kind_t */
    uint8_t aux_kind; /* gen_aux_kind_t */
    uint8_t platform, product, idle;
    uint16_t lender;
    bool revolving;
    bool force_miss; /* delinquent over-borrower: first due is missed */
    bool draw_frozen;
    uint32_t next_free;
} gen_loan_t;

typedef struct gen_borrower {
    char id[LW_BORROWER_ID_LEN + 1];
    bool arrived;
    bool showcase; /* an early over-borrower, arriving in the first minutes */
    uint8_t kind;  /* lw_gen_kind_t */
    uint8_t nloans;
    uint8_t burst_left; /* applications left in an over-borrowing burst */
    bool has_income;
    int64_t income_fen;
    int64_t app_at; /* next application, GEN_NEVER when none planned */
    uint64_t lenders_used[GEN_MAX_LENDERS / 64];
    uint64_t platforms_used;
    int8_t next_slot;   /* which loan acts next (-1: the application), as */
    uint8_t next_timer; /* gen_borrower_next() found it, so a step reads one loan */
    uint32_t loans[GEN_MAX_LOANS];
} gen_borrower_t;

typedef struct gen_heap_ent {
    int64_t at;
    uint32_t idx;
} gen_heap_ent_t;

struct lw_gen_s {
    lw_gen_conf_t conf;
    uint64_t rng[4];
    char seedtag[9];
    lw_id_key_t *own_key; /* the demo key, when conf.id_key is NULL */
    const lw_id_key_t *key;

    gen_platform_t *platforms;
    uint32_t nplatforms;
    uint64_t weight_total;
    char lenders[GEN_MAX_LENDERS][24];
    uint32_t nlenders;

    gen_borrower_t *borrowers;
    gen_heap_ent_t *heap;
    uint32_t nborrowers;

    gen_loan_t *loans;
    uint32_t nloans_cap, nloans_used, free_head;

    uint64_t id_perm_a, id_perm_b; /* borrower index -> synthetic national id */
    uint64_t next_loan_no, next_event_no;
    int64_t now;
    lw_gen_stats_t stats;
    char err[256];
};

#endif /* LOANWIRE_GEN_INT_H */
