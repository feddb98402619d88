/*
 * Replays fuzz inputs through the libFuzzer entry point without libFuzzer, so the seed corpus and
 * every crash ever found run as an ordinary test in every build (plain, sanitizers, gcc, clang).
 *
 *   fuzz_peer_replay DIR_OR_FILE...
 *
 * Each regular file is one input (files named README* are documentation and skipped). Exits 0
 * after replaying everything; a finding aborts, which fails the test. A missing path is an error
 * (exit 1), so a moved corpus cannot turn the test into a silent pass.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shoal_buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    shoal_buf in;
    shoal_buf_create(&in, 0);
    size_t n;
    do {
        if (shoal_buf_reserve(&in, 4096) != 0) {
            shoal_buf_destroy(&in);
            fclose(f);
            return -1;
        }
        n = fread(in.data + in.len, 1, in.cap - in.len - 1, f); /* one byte kept for the NUL */
        in.len += n;
    } while (n > 0);
    fclose(f);
    LLVMFuzzerTestOneInput(in.data, in.len);
    shoal_buf_destroy(&in);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s does not exist\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) != 0)
                return 1;
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 1;
        }
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (e->d_name[0] == '.' || strncmp(e->d_name, "README", 6) == 0)
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (replay_file(path) != 0) {
                closedir(d);
                return 1;
            }
            files++;
        }
        closedir(d);
    }
    printf("replayed %d inputs\n", files);
    return 0;
}
