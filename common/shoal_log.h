/*
 * shoal_log: one line per event on stderr, as key=value fields:
 *
 *   ts=2026-11-24T16:30:00.123Z level=warn module=s3 event=retry op=GetObject key="a b" status=503
 *
 * The caller writes its fields in `fmt` as key=value pairs; string values that may hold spaces,
 * quotes or control bytes go through shoal_log_q(). Each line leaves in a single write(2), so
 * lines of concurrent threads never interleave. Never pass a secret to a log call.
 *
 * The same line can leave as one JSON object instead (shoal_log_set_format), for log pipelines
 * that parse JSON: every key=value becomes a member, values that read as numbers become numbers.
 * When stderr is the systemd journal (JOURNAL_STREAM names it), each line starts with its
 * syslog priority ("<3>" error ... "<7>" debug), which journald strips and keeps as PRIORITY.
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

typedef enum shoal_log_format {
    SHOAL_LOG_LOGFMT = 0, /* key=value fields (the default) */
    SHOAL_LOG_JSON = 1,   /* one JSON object per line */
} shoal_log_format;

void shoal_log_set_format(shoal_log_format format);
shoal_log_format shoal_log_get_format(void);
/* "logfmt", "json" -> format; -1 for anything else. */
int shoal_log_parse_format(const char *name, shoal_log_format *out);
/* Turns the journald priority prefix on when stderr is the stream JOURNAL_STREAM names (as
 * systemd sets it for a service's stderr), off otherwise; returns whether it is on. */
bool shoal_log_detect_journal(void);
/* Rewrites one logfmt line (as shoal_log makes them) as one JSON object into out, always
 * NUL-terminated; a line that does not fit is cut at a member boundary and gets
 * "truncated":true. out_len must be at least 32. Returns the length written. Exposed for tests. */
size_t shoal_log_to_json(const char *line, char *out, size_t out_len);
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
