/* share — see include/share.h. */
#include "share.h"

/* The times share_give_back() leases at: long before any real lease
 * (Unix ms near 1970), so that the leases it writes have always expired. */
#define SHARE_PAST_EXPIRE_AT 1 /* owner's lease: until 2 */
#define SHARE_PAST_PARK_AT 3   /* the returned owner's: taken if expired at 3, until 4 */

size_t share_limit(size_t accounts, size_t live)
{
    if (live == 0)
        live = 1;
    return accounts / live + (accounts % live != 0);
}

size_t share_excess(size_t held, size_t limit) { return held > limit ? held - limit : 0; }

bool share_may_take(size_t held, size_t limit) { return held < limit; }

bool share_may_take_account(size_t held, size_t limit, int free_turns)
{
    return share_may_take(held, limit) || free_turns >= SHARE_ORPHAN_TURNS;
}

int64_t share_live_window_ms(int64_t lease_ms)
{
    /* the beat period, plus SHARE_LIVE_BEATS more */
    return lease_ms / 4 * (SHARE_LIVE_BEATS + 1);
}

int share_give_back(struct store *st, const char *account, const char *owner, struct err *e)
{
    /* owner's own lease (and only it: another owner's live lease has not
     * expired at SHARE_PAST_EXPIRE_AT) made to end long ago */
    int r = store_account_lease(st, account, owner, SHARE_PAST_EXPIRE_AT, 1, e);
    if (r != 0)
        return r;
    /* then passed on, expired, so that owner's next renewal skips it; a
     * lease another instance took in between has not expired at
     * SHARE_PAST_PARK_AT and stays theirs */
    r = store_account_lease(st, account, SHARE_RETURNED_OWNER, SHARE_PAST_PARK_AT, 1, e);
    return r == STORE_LEASE_LOST ? 0 : r;
}
