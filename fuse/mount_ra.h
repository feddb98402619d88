/*
 * mount_ra: which reads of an open file are sequential, as the kernel's readahead and other
 * S3 file systems' prefetchers tell it: per stream, the offset where the next read would follow.
 *
 * A read continues a recent stream of the file when it starts at the stream's end, a little past
 * it, or a little before it inside the stream (a request of the run that came late). The kernel
 * sends its readahead as several requests at once and the mount's threads may take them out of
 * order, so "a little" is up to MOUNT_RA_GAP_READS of the read's own length, or as far as the
 * stream's run (at most MOUNT_RA_GAP_MAX), whichever is more: a long sequential run is not broken by a request that
 * overtook others, while a random reader of 4 KiB pieces is almost never taken for a sequential
 * one (it would have to land within 32 KiB past one of its last reads). Any other read is a seek
 * and starts a new stream in place of the least recently used one. A file keeps
 * MOUNT_RA_SLOTS streams, so a few readers of one file (or one reader going back and forth
 * between two places) keep theirs.
 *
 * mount_ra_note answers how long the run of sequential bytes is that a read ends: 0 for a seek
 * (a random read), else the bytes from where the stream began to the end of this read. A first
 * read at offset 0, or within MOUNT_RA_GAP_READS of its length of it (a request that overtook the
 * first one), begins a run from 0 (a file read from its start is most likely read through), as the
 * kernel's initial readahead assumes. What to fetch ahead for a run is the backend's business: it
 * gets the run with each read (mount_backend.read).
 *
 * Pure and not thread-safe: the caller serialises the calls on one mount_ra.
 */
#ifndef MOUNT_RA_H
#define MOUNT_RA_H

#include <stddef.h>
#include <stdint.h>

#define MOUNT_RA_SLOTS 4
#define MOUNT_RA_GAP_READS 8
#define MOUNT_RA_GAP_MAX (8u << 20) /* twice the kernel readahead window the mount asks for */

typedef struct mount_ra_stream {
    uint64_t start; /* where its run began */
    uint64_t next; /* the end of its furthest read */
    uint64_t used; /* tick of its last read; 0: a free slot */
} mount_ra_stream;

/* A file's streams; all zero is a file nobody read yet. */
typedef struct mount_ra {
    mount_ra_stream s[MOUNT_RA_SLOTS];
    uint64_t tick;
} mount_ra;

/* Notes a read of [off, off+len) and returns the sequential run it ends (see above): 0 when it is
 * a seek. */
uint64_t mount_ra_note(mount_ra *ra, uint64_t off, size_t len);

#endif
