/*
 * The level and sink are process-wide settings made once at start-up (from parsed config) and read
 * on every call; they are atomics so a test may change them while threads log.
 */
#include "shoal_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = SHOAL_LOG_INFO;
static _Atomic(shoal_log_sink_fn) log_sink;
static void *_Atomic log_sink_ud;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void shoal_log_set_level(shoal_log_level level) { atomic_store(&log_level, (int)level); }
shoal_log_level shoal_log_get_level(void) { return (shoal_log_level)atomic_load(&log_level); }

int shoal_log_parse_level(const char *name, shoal_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (shoal_log_level)i;
            return 0;
        }
    }
    return -1;
}

void shoal_log_set_sink(shoal_log_sink_fn fn, void *ud)
{
    atomic_store(&log_sink_ud, ud);
    atomic_store(&log_sink, fn);
}

bool shoal_log_enabled(shoal_log_level level) { return (int)level <= atomic_load(&log_level); }

void shoal_log(shoal_log_level level, const char *module, const char *event, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s module=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level & 3], module, event);
    if (n < 0)
        return;
    if (fmt && fmt[0] && (size_t)n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    shoal_log_sink_fn sink = atomic_load(&log_sink);
    if (sink) {
        line[n] = '\0';
        sink(atomic_load(&log_sink_ud), level, line);
        return;
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

const char *shoal_log_q(char *tmp, size_t tmp_len, const char *s)
{
    if (!s)
        s = "";
    bool plain = s[0] != '\0';
    for (const unsigned char *p = (const unsigned char *)s; plain && *p; p++)
        plain = *p > ' ' && *p < 0x7f && *p != '"' && *p != '\\';
    if (plain || tmp_len < 8)
        return plain ? s : "\"\"";
    size_t o = 0;
    tmp[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[5];
        size_t el;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p, el = 2;
        } else if (*p == '\n') {
            esc[0] = '\\', esc[1] = 'n', el = 2;
        } else if (*p == '\r') {
            esc[0] = '\\', esc[1] = 'r', el = 2;
        } else if (*p == '\t') {
            esc[0] = '\\', esc[1] = 't', el = 2;
        } else if (*p < ' ' || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            el = 4;
        } else {
            esc[0] = (char)*p, el = 1;
        }
        if (o + el + 5 > tmp_len) {
            memcpy(tmp + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(tmp + o, esc, el);
        o += el;
    }
    tmp[o++] = '"';
    tmp[o] = '\0';
    return tmp;
}
