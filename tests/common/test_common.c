/* Tests of the shared basics: errors, buffers, cursors, log quoting, addresses, the seeded
 * generator; and of the test runner's budget watchdog (tests/support/tt.c). */
#include "shoal_buf.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "shoal_hist.h"
#include "shoal_log.h"
#include "shoal_mix.h"
#include "tt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

TT_TEST(test_error_keeps_code_and_context_when_wrapped)
{
    shoal_error_set(SHOAL_ERR_S3_CHANGED, "GetObject bucket=b key=k: etag changed");
    shoal_error_wrap("read block %d", 3);
    TT_CHECK(shoal_error_code() == SHOAL_ERR_S3_CHANGED, "code %d", shoal_error_code());
    TT_CHECK(strcmp(shoal_error_message(), "read block 3: GetObject bucket=b key=k: etag changed") == 0,
             "message '%s'", shoal_error_message());
    TT_CHECK(strcmp(shoal_error_name(SHOAL_ERR_S3_CHANGED), "ERR_S3_CHANGED") == 0, "name");
    shoal_error_errno(ENOSPC, "write %s", "/x");
    TT_CHECK(shoal_error_code() == SHOAL_ERR_NOSPACE, "ENOSPC maps to NOSPACE, got %d", shoal_error_code());
}

TT_TEST(test_buf_grows_and_stays_nul_terminated)
{
    shoal_buf b;
    TT_OK(shoal_buf_create(&b, 0));
    TT_CHECK(strcmp(shoal_buf_str(&b), "") == 0, "empty buffer reads as empty string");
    for (int i = 0; i < 1000; i++)
        TT_OK(shoal_buf_appendf(&b, "%d,", i));
    TT_CHECK(b.len == strlen((char *)b.data), "len %zu vs strlen", b.len);
    TT_CHECK(memcmp(b.data + b.len - 4, "999,", 4) == 0, "tail");
    TT_OK(shoal_buf_append(&b, "\0x", 2));
    TT_CHECK(b.data[b.len] == '\0' && b.data[b.len - 2] == '\0', "binary append keeps NULs");
    size_t n;
    uint8_t *p = shoal_buf_steal(&b, &n);
    TT_CHECK(p && n > 3000 && b.data == NULL && b.len == 0, "steal");
    free(p);
    shoal_buf_destroy(&b);
}

TT_TEST(test_cursor_split_and_trim)
{
    shoal_cursor c = shoal_cursor_from_str("  a=1 ; b = 2;;c");
    shoal_cursor first = shoal_cursor_trim(shoal_cursor_split(&c, ';'));
    TT_CHECK(shoal_cursor_eq_str(first, "a=1"), "first '%.*s'", (int)first.len, first.ptr);
    shoal_cursor second = shoal_cursor_trim(shoal_cursor_split(&c, ';'));
    TT_CHECK(shoal_cursor_eq_str(second, "b = 2"), "second");
    TT_CHECK(shoal_cursor_split(&c, ';').len == 0, "empty field between separators");
    TT_CHECK(shoal_cursor_eq_str(shoal_cursor_split(&c, ';'), "c") && c.len == 0, "last field");
    TT_CHECK(shoal_cursor_eq_str_ci(shoal_cursor_from_str("Content-Length"), "content-length"), "ci");
}

TT_TEST(test_log_quotes_values_with_spaces_and_controls)
{
    char tmp[64];
    TT_CHECK(strcmp(shoal_log_q(tmp, sizeof tmp, "plain"), "plain") == 0, "plain stays bare");
    TT_CHECK(strcmp(shoal_log_q(tmp, sizeof tmp, "a b\"c\r"), "\"a b\\\"c\\r\"") == 0, "got %s", tmp);
    TT_CHECK(strcmp(shoal_log_q(tmp, sizeof tmp, ""), "\"\"") == 0, "empty is quoted");
    char big[200];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const char *q = shoal_log_q(tmp, sizeof tmp, big);
    TT_CHECK(strlen(q) < sizeof tmp && strstr(q, "...") != NULL, "truncated: %s", q);
}

static char captured[4096];
static void capture(void *ud, shoal_log_level level, const char *line)
{
    (void)ud, (void)level;
    snprintf(captured, sizeof captured, "%s", line);
}

TT_TEST(test_log_writes_one_key_value_line_and_honours_level)
{
    shoal_log_set_sink(capture, NULL);
    shoal_log_set_level(SHOAL_LOG_WARN);
    LOG_INFO("test", "hidden", "x=%d", 1);
    TT_CHECK(captured[0] == '\0', "info is below warn: '%s'", captured);
    LOG_WARN("test", "shown", "x=%d", 2);
    TT_CHECK(strstr(captured, "level=warn module=test event=shown x=2") != NULL, "line '%s'", captured);
    TT_CHECK(strncmp(captured, "ts=", 3) == 0 && !strchr(captured, '\n'), "one line with ts: '%s'", captured);
    shoal_log_level l;
    TT_CHECK(shoal_log_parse_level("debug", &l) == 0 && l == SHOAL_LOG_DEBUG, "parse debug");
    TT_CHECK(shoal_log_parse_level("verbose", &l) == -1, "unknown level refused");
}

/* The JSON form: every key=value a member, numbers as numbers, quoted values unquoted and
 * re-escaped for JSON, a line too long for the buffer cut at a member with "truncated":true. */
TT_TEST(test_log_json_rewrites_fields_numbers_and_escapes)
{
    char out[512];
    shoal_log_to_json("ts=2026-12-06T10:00:00.000Z level=warn module=s3 event=retry status=503 wait=0.25 "
                      "key=\"a b\\\"c\\x01\" etag=0123 neg=-7 bare=",
                      out, sizeof out);
    const char *want = "{\"ts\":\"2026-12-06T10:00:00.000Z\",\"level\":\"warn\",\"module\":\"s3\",\"event\":\"retry\","
                       "\"status\":503,\"wait\":0.25,\"key\":\"a b\\\"c\\u0001\",\"etag\":\"0123\",\"neg\":-7,"
                       "\"bare\":\"\"}";
    TT_CHECK(strcmp(out, want) == 0, "got  %s\nwant %s", out, want);
    /* A quoted number stays a string: the caller quoted it on purpose. */
    shoal_log_to_json("id=\"42\"", out, sizeof out);
    TT_CHECK(strcmp(out, "{\"id\":\"42\"}") == 0, "got %s", out);
    char line[400];
    snprintf(line, sizeof line, "a=1 b=%0200d c=3", 0);
    size_t n = shoal_log_to_json(line, out, 64);
    TT_CHECK(n < 64 && strcmp(out, "{\"a\":1,\"truncated\":true}") == 0, "cut line: %s (%zu)", out, n);
}

/* Under --log-format json the sink (and stderr) get the JSON object; back to logfmt after. */
TT_TEST(test_log_format_json_reaches_the_sink)
{
    shoal_log_format f;
    TT_CHECK(shoal_log_parse_format("json", &f) == 0 && f == SHOAL_LOG_JSON, "parse json");
    TT_CHECK(shoal_log_parse_format("text", &f) == -1, "unknown format refused");
    shoal_log_set_sink(capture, NULL);
    shoal_log_set_level(SHOAL_LOG_INFO);
    shoal_log_set_format(SHOAL_LOG_JSON);
    LOG_INFO("test", "shown", "n=%d path=%s", 5, "x");
    shoal_log_set_format(SHOAL_LOG_LOGFMT);
    shoal_log_set_sink(NULL, NULL);
    TT_CHECK(captured[0] == '{' && strstr(captured, "\"level\":\"info\",\"module\":\"test\",\"event\":\"shown\",\"n\":5,"
                                                    "\"path\":\"x\"}") != NULL,
             "line '%s'", captured);
}

/* With stderr on the journal (JOURNAL_STREAM names its device and inode, as systemd sets it),
 * each line starts with its syslog priority; with JOURNAL_STREAM naming another file, none. */
TT_TEST(test_log_priority_prefix_only_when_stderr_is_the_journal)
{
    char path[] = "/tmp/shoal-log-XXXXXX";
    int fd = mkstemp(path);
    TT_CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
    int saved = dup(STDERR_FILENO);
    TT_CHECK(saved >= 0 && dup2(fd, STDERR_FILENO) >= 0, "dup2: %s", strerror(errno));
    struct stat st;
    TT_CHECK(fstat(fd, &st) == 0, "fstat");
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", js, 1);
    bool other = shoal_log_detect_journal();
    LOG_WARN("test", "plain", "x=1");
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    bool journal = shoal_log_detect_journal();
    LOG_WARN("test", "prio", "x=2");
    LOG_ERROR("test", "prio", "x=3");
    unsetenv("JOURNAL_STREAM");
    shoal_log_detect_journal();
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[1024] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    TT_CHECK(!other && journal, "detected: other file %d, the journal's stream %d", other, journal);
    TT_CHECK(n > 0 && strncmp(buf, "ts=", 3) == 0, "the first line has no prefix: %s", buf);
    TT_CHECK(strstr(buf, "\n<4>ts=") && strstr(buf, "event=prio x=2\n<3>ts="), "priorities: %s", buf);
}

TT_TEST(test_addr_parses_ipv4_ipv6_and_refuses_names)
{
    shoal_addr a;
    char s[SHOAL_ADDR_STRLEN];
    TT_OK(shoal_addr_parse("127.0.0.2:7400", 0, &a));
    TT_CHECK(a.family == 4 && a.port == 7400 && a.ip[3] == 2, "v4");
    TT_CHECK(strcmp(shoal_addr_format(&a, s), "127.0.0.2:7400") == 0, "format %s", s);
    TT_OK(shoal_addr_parse("[::1]:9", 0, &a));
    TT_CHECK(a.family == 6 && strcmp(shoal_addr_format(&a, s), "[::1]:9") == 0, "v6 %s", s);
    TT_OK(shoal_addr_parse("10.0.0.1", 7400, &a));
    TT_CHECK(a.port == 7400, "default port");
    TT_CHECK(shoal_addr_parse("10.0.0.1", 0, &a) == -1, "port required");
    TT_CHECK(shoal_addr_parse("host.example:80", 0, &a) == -1 && shoal_error_code() == SHOAL_ERR_INVAL,
             "names are refused");
    TT_CHECK(strstr(shoal_error_message(), "host.example") != NULL, "message names the input: %s",
             shoal_error_message());
    TT_CHECK(shoal_addr_parse("1.2.3.4:70000", 0, &a) == -1, "port range");
    shoal_addr b = shoal_addr_ipv4(0x7f000002, 7400);
    TT_OK(shoal_addr_parse("127.0.0.2:7400", 0, &a));
    TT_CHECK(shoal_addr_eq(&a, &b), "ipv4 helper equals parsed");
}

static uint64_t seq_random(void *ctx)
{
    uint64_t *state = ctx;
    return (*state)++;
}

TT_TEST(test_env_uniform_stays_in_range)
{
    uint64_t st = UINT64_MAX - 5;
    static const shoal_env_vtab vt = {.random = seq_random};
    shoal_env e = {&vt, &st};
    for (int i = 0; i < 100; i++) {
        uint64_t v = shoal_env_uniform(&e, 7);
        TT_CHECK(v < 7, "v=%llu", (unsigned long long)v);
    }
    TT_CHECK(shoal_env_uniform(&e, 0) == 0, "n=0");
}

TT_TEST(test_hist_buckets_are_cumulative_with_bounds_inclusive)
{
    shoal_hist h;
    shoal_hist_create(&h);
    shoal_hist_observe(&h, 100);       /* on the first bound: in it (le means <=) */
    shoal_hist_observe(&h, 101);       /* just past it: the next one */
    shoal_hist_observe(&h, 3000000);   /* 3 s */
    shoal_hist_observe(&h, 120000000); /* past the last bound: only +Inf */
    shoal_buf b = {0};
    TT_OK(shoal_hist_render(&h, "x_seconds", "op=\"get\"", &b));
    const char *t = shoal_buf_str(&b);
    TT_CHECK(strstr(t, "x_seconds_bucket{op=\"get\",le=\"0.0001\"} 1\n"), "first bucket: %s", t);
    TT_CHECK(strstr(t, "x_seconds_bucket{op=\"get\",le=\"0.00025\"} 2\n"), "second bucket: %s", t);
    TT_CHECK(strstr(t, "x_seconds_bucket{op=\"get\",le=\"2.5\"} 2\n"), "2.5 s bucket: %s", t);
    TT_CHECK(strstr(t, "x_seconds_bucket{op=\"get\",le=\"5\"} 3\n"), "5 s bucket: %s", t);
    TT_CHECK(strstr(t, "x_seconds_bucket{op=\"get\",le=\"60\"} 3\n"), "60 s bucket: %s", t);
    TT_CHECK(strstr(t, "x_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"), "+Inf: %s", t);
    TT_CHECK(strstr(t, "x_seconds_sum{op=\"get\"} 123.000201\n"), "sum: %s", t);
    TT_CHECK(strstr(t, "x_seconds_count{op=\"get\"} 4\n"), "count: %s", t);
    shoal_buf_reset(&b);
    shoal_hist_counts c;
    shoal_hist_read(&h, &c);
    shoal_hist h2;
    shoal_hist_create(&h2);
    shoal_hist_store(&h2, &c);
    TT_OK(shoal_hist_render(&h2, "y", "", &b));
    t = shoal_buf_str(&b);
    TT_CHECK(strstr(t, "y_bucket{le=\"+Inf\"} 4\ny_sum 123.000201\ny_count 4\n"), "copy without labels: %s", t);
    shoal_buf_destroy(&b);
}

/* SplitMix64's published first value for seed 0, and a fill in pieces of multiples of 8 equal to
 * one fill, the last piece cut short. */
TT_TEST(test_mix_fill_in_pieces_gives_the_bytes_of_one_fill)
{
    uint64_t x = 0, first = shoal_splitmix64(&x);
    TT_CHECK(first == 0xe220a8397b1dcdafull, "first value of seed 0: %#llx", (unsigned long long)first);
    uint8_t whole[1001], pieces[1001];
    uint64_t a = 42, b = 42;
    shoal_mix_fill(whole, sizeof whole, &a);
    size_t off = 0, step[] = {8, 64, 16, 800, 113};
    for (size_t i = 0; i < sizeof step / sizeof *step; i++) {
        shoal_mix_fill(pieces + off, step[i], &b);
        off += step[i];
    }
    TT_CHECK(off == sizeof pieces && memcmp(whole, pieces, sizeof whole) == 0, "pieces differ from one fill");
    TT_CHECK(a == b, "the states differ after the same bytes");
}

/* Runs `body` in a child process; returns its wait status and how long it took. */
static int in_child(void (*body)(void), uint64_t *took_ms)
{
    uint64_t t0 = shoal_clock_mono_us();
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        body();
        _exit(0);
    }
    int status = 0;
    TT_CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    *took_ms = (shoal_clock_mono_us() - t0) / 1000;
    return status;
}

static void overrun(void)
{
    tt_budget_start(200, "a 10 s sleep");
    sleep(10);
}

static void rearmed_shorter(void)
{
    tt_budget_start(600000, "a first step");
    tt_budget_start(200, "a 10 s sleep after a re-arm");
    sleep(10);
}

static void stopped(void)
{
    tt_budget_start(200, "nothing");
    tt_budget_stop();
    usleep(600 * 1000);
}

/* The watchdog fails a case that outruns its budget (exit 1, where the case would end with 0), a
 * re-arm replaces the earlier budget, and a stopped one never fires. */
TT_TEST(test_tt_budget_fails_a_case_that_outruns_it_and_only_then)
{
    uint64_t took;
    int st = in_child(overrun, &took);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "overrun: status %#x after %llu ms", st, (unsigned long long)took);
    st = in_child(rearmed_shorter, &took);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "re-armed: status %#x after %llu ms", st, (unsigned long long)took);
    st = in_child(stopped, &took);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "stopped: status %#x after %llu ms", st, (unsigned long long)took);
}

/* A budget is its base plus its units' allowance, scaled by SHOAL_TEST_SLOWDOWN. */
TT_TEST(test_tt_budget_grows_with_the_work_and_the_slowdown)
{
    unsetenv("SHOAL_TEST_SLOWDOWN");
    uint64_t one = tt_budget_ms(1000, 100, 10), two = tt_budget_ms(1000, 200, 10);
    TT_CHECK(two - one == one - tt_budget_ms(1000, 0, 10) && two > one, "100 more units: %llu -> %llu",
             (unsigned long long)one, (unsigned long long)two);
    setenv("SHOAL_TEST_SLOWDOWN", "2.5", 1);
    TT_CHECK(tt_budget_ms(1000, 100, 10) == one * 5 / 2, "slowdown 2.5: %llu, %llu without",
             (unsigned long long)tt_budget_ms(1000, 100, 10), (unsigned long long)one);
    unsetenv("SHOAL_TEST_SLOWDOWN");
}

TT_MAIN()
