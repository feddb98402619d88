/*
 * mount_ra: sequential or random, per stream of an open file (see mount_ra.h).
 */
#include "mount_ra.h"

#include <stdbool.h>

uint64_t mount_ra_note(mount_ra *ra, uint64_t off, size_t len)
{
    uint64_t end = off + len;
    mount_ra_stream *hit = NULL, *victim = &ra->s[0];
    for (int i = 0; i < MOUNT_RA_SLOTS; i++) {
        mount_ra_stream *s = &ra->s[i];
        uint64_t run = s->next - s->start;
        uint64_t ahead = run < MOUNT_RA_GAP_MAX ? run : MOUNT_RA_GAP_MAX;
        if (ahead < (uint64_t)len * MOUNT_RA_GAP_READS)
            ahead = (uint64_t)len * MOUNT_RA_GAP_READS;
        bool follows = off >= s->next ? off - s->next <= ahead : off >= s->start && s->next - off <= ahead;
        if (s->used != 0 && follows && (hit == NULL || s->used > hit->used))
            hit = s;
        if (s->used < victim->used)
            victim = s;
    }
    ra->tick++;
    if (hit != NULL) {
        if (end > hit->next)
            hit->next = end;
        hit->used = ra->tick;
        return hit->next - hit->start;
    }
    /* A seek, or the file's first read: a new stream, a run only when it starts the file (at 0, or
     * as close to it as a request that overtook the first one may be). */
    bool at_start = off <= (uint64_t)len * MOUNT_RA_GAP_READS;
    *victim = (mount_ra_stream){.start = at_start ? 0 : off, .next = end, .used = ra->tick};
    return at_start ? end : 0;
}
