/*
 * shoal_log: one line per event on stderr, as key=value fields:
 *
 *   ts=2026-11-24T16:30:00.123Z level=warn module=s3 event=retry op=GetObject key="a b" status=503
 *
 * The caller writes its fields in `fmt` as key=value pairs; string values that may hold spaces,
 * quotes or control bytes go through shoal_log_q(). Each line leaves in a single write(2), so
 * lines of concurrent threads never interleave. Never pass a secret to a log call.
 */
#ifndef SHOAL_LOG_H
#define SHOAL_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum shoal_log_level {
    SHOAL_LOG_ERROR = 0,
    SHOAL_LOG_WARN = 1,
    SHOAL_LOG_INFO = 2,
    SHOAL_LOG_DEBUG = 3,
} shoal_log_level;

/* A sink receives each finished line (without the trailing newline). NULL restores stderr. */
typedef void (*shoal_log_sink_fn)(void *ud, shoal_log_level level, const char *line);

void shoal_log_set_level(shoal_log_level level);
shoal_log_level shoal_log_get_level(void);
/* "error", "warn", "info", "debug" -> level; -1 for anything else. */
int shoal_log_parse_level(const char *name, shoal_log_level *out);
void shoal_log_set_sink(shoal_log_sink_fn fn, void *ud);
bool shoal_log_enabled(shoal_log_level level);

void shoal_log(shoal_log_level level, const char *module, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Quotes `s` for a log value when needed: returns s itself when it is non-empty and made only of
 * printable bytes other than space, '"' and '\'; otherwise writes "..." with \" \\ \n \r \t \xNN
 * escapes into tmp (truncated with "..." when tmp is too small) and returns tmp. */
const char *shoal_log_q(char *tmp, size_t tmp_len, const char *s);

#define SHOAL_LOG_AT(lvl, module, event, ...)                                                     \
    do {                                                                                          \
        if (shoal_log_enabled(lvl))                                                               \
            shoal_log(lvl, module, event, __VA_ARGS__);                                           \
    } while (0)
#define LOG_ERROR(module, event, ...) SHOAL_LOG_AT(SHOAL_LOG_ERROR, module, event, __VA_ARGS__)
#define LOG_WARN(module, event, ...) SHOAL_LOG_AT(SHOAL_LOG_WARN, module, event, __VA_ARGS__)
#define LOG_INFO(module, event, ...) SHOAL_LOG_AT(SHOAL_LOG_INFO, module, event, __VA_ARGS__)
#define LOG_DEBUG(module, event, ...) SHOAL_LOG_AT(SHOAL_LOG_DEBUG, module, event, __VA_ARGS__)

#endif
