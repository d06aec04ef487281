/* share — see include/share.h. */
#include "share.h"

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
