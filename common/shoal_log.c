/*
 * The level, format and sink are process-wide settings made at start-up (from parsed config) and
 * read on every call; they are atomics so a reload or a test may change them while threads log.
 * Every line is first made as logfmt (callers write their fields that way); the JSON format
 * rewrites that line, so one field syntax serves both and no caller knows the format.
 */
#include "shoal_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = SHOAL_LOG_INFO;
static _Atomic(shoal_log_sink_fn) log_sink;
static void *_Atomic log_sink_ud;
static _Atomic int log_format = SHOAL_LOG_LOGFMT;
static atomic_bool log_journal;

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

void shoal_log_set_format(shoal_log_format format) { atomic_store(&log_format, (int)format); }
shoal_log_format shoal_log_get_format(void) { return (shoal_log_format)atomic_load(&log_format); }

int shoal_log_parse_format(const char *name, shoal_log_format *out)
{
    if (!strcmp(name, "logfmt"))
        *out = SHOAL_LOG_LOGFMT;
    else if (!strcmp(name, "json"))
        *out = SHOAL_LOG_JSON;
    else
        return -1;
    return 0;
}

bool shoal_log_detect_journal(void)
{
    /* systemd sets JOURNAL_STREAM=<device>:<inode> of the stream it gave the service as stderr;
     * a child whose stderr was redirected elsewhere inherits the variable but not the stream. */
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    bool on = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
              (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    atomic_store(&log_journal, on);
    return on;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

typedef struct jbuf {
    char *p;
    size_t len, cap; /* cap leaves room for the truncation mark, the closing brace and the NUL */
    bool full;
} jbuf;

static void jput(jbuf *b, const char *s, size_t n)
{
    if (b->full || b->len + n > b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A JSON string of the bytes s[0..n): '"', '\\' and control bytes escaped. */
static void jstr(jbuf *b, const char *s, size_t n)
{
    jput(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            jput(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            jput(b, esc, 6);
        } else {
            jput(b, (const char *)&c, 1);
        }
    }
    jput(b, "\"", 1);
}

/* Whether s[0..n) is a JSON number: -?digits(.digits)?, no leading zero before more digits. */
static bool is_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    size_t d0 = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == d0 || (s[d0] == '0' && i - d0 > 1))
        return false;
    if (i < n && s[i] == '.') {
        size_t f0 = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == f0)
            return false;
    }
    return i == n;
}

/* Undoes shoal_log_q's quoting of the value whose opening '"' is at *p, into val (at most
 * val_len - 1 bytes kept); moves *p past the closing quote, or to the end of an unclosed value. */
static size_t unquote(const char **p, char *val, size_t val_len)
{
    const char *s = *p + 1;
    size_t o = 0;
    while (*s && *s != '"') {
        char c = *s++;
        if (c == '\\' && *s) {
            char e = *s++;
            if (e == 'n') {
                c = '\n';
            } else if (e == 'r') {
                c = '\r';
            } else if (e == 't') {
                c = '\t';
            } else if (e == 'x' && s[0] && s[1]) {
                char hex[3] = {s[0], s[1], 0};
                c = (char)strtol(hex, NULL, 16);
                s += 2;
            } else {
                c = e;
            }
        }
        if (o + 1 < val_len)
            val[o++] = c;
    }
    *p = *s == '"' ? s + 1 : s;
    return o;
}

size_t shoal_log_to_json(const char *line, char *out, size_t out_len)
{
    static const char trunc[] = "\"truncated\":true";
    if (out_len < 32) {
        if (out_len)
            out[0] = '\0';
        return 0;
    }
    jbuf b = {out, 0, out_len - (sizeof trunc + 3), false};
    jput(&b, "{", 1);
    bool first = true;
    for (const char *p = line;;) {
        while (*p == ' ')
            p++;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        size_t kn = (size_t)(p - k);
        if (!kn)
            break;
        char val[2048];
        size_t vn = 0;
        bool quoted = false;
        if (*p == '=' && p[1] == '"') {
            p++;
            quoted = true;
            vn = unquote(&p, val, sizeof val);
        } else if (*p == '=') {
            const char *v = ++p;
            while (*p && *p != ' ')
                p++;
            vn = (size_t)(p - v) < sizeof val ? (size_t)(p - v) : sizeof val - 1;
            memcpy(val, v, vn);
        }
        size_t mark = b.len;
        if (!first)
            jput(&b, ",", 1);
        jstr(&b, k, kn);
        jput(&b, ":", 1);
        if (!quoted && is_number(val, vn))
            jput(&b, val, vn);
        else
            jstr(&b, val, vn);
        if (b.full) { /* the room kept back always holds the mark */
            b.len = mark;
            if (!first)
                out[b.len++] = ',';
            memcpy(out + b.len, trunc, sizeof trunc - 1);
            b.len += sizeof trunc - 1;
            break;
        }
        first = false;
    }
    out[b.len++] = '}';
    out[b.len] = '\0';
    return b.len;
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
    line[n] = '\0';
    /* Both forms keep 3 bytes free in front of the text for the journal's priority prefix. */
    char json[3 + 3072 + 2];
    char *text = line + 0;
    if (atomic_load(&log_format) == SHOAL_LOG_JSON) {
        text = json + 3;
        n = (int)shoal_log_to_json(line, text, sizeof json - 4);
    }
    shoal_log_sink_fn sink = atomic_load(&log_sink);
    if (sink) {
        sink(atomic_load(&log_sink_ud), level, text);
        return;
    }
    if (atomic_load(&log_journal)) {
        /* "<N>": journald takes it as the entry's PRIORITY (3 err, 4 warning, 6 info, 7 debug). */
        static const char prio[] = {'3', '4', '6', '7'};
        if (text == line) {
            memcpy(json + 3, line, (size_t)n + 1);
            text = json + 3;
        }
        text -= 3;
        text[0] = '<', text[1] = prio[level & 3], text[2] = '>';
        n += 3;
    }
    text[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, text, (size_t)n);
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
