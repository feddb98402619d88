/* Tests of the control socket's JSON beyond the protocol tests (test_node_control.c): what json-c
 * alone would accept and node_json_parse refuses, 64-bit integers read and written exactly, and
 * the status document's bytes. */
#include "node_control.h"
#include "node_stats.h"
#include "shoal_error.h"
#include "tt.h"

#include <stdint.h>
#include <string.h>

TT_TEST(test_node_json_refuses_what_json_c_alone_would_take)
{
    static const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"[-01]", "byte 1: bad number"},
        {"[00]", "byte 1: bad number"},
        {"[1.e5]", "byte 1: bad number"},
        {"[1.5e+]", "json-c"},
        {"NaN", "byte 0: unexpected token"},
        {"[Infinity]", "byte 1: unexpected token"},
        {"[-Infinity]", "byte 1: bad number"},
        {"18446744073709551616", "byte 0: integer out of range: 18446744073709551616"},
        {"-9223372036854775809", "byte 0: integer out of range: -9223372036854775809"},
        {"{\"k\\u0000x\":1}", "byte 3: \\u0000 in string"},
        {"[\"ok\",\"\\udc00\"]", "byte 7: lone surrogate"},
        {"\"\\ud800\\u0041\"", "byte 1: lone surrogate"},
        {"[\"a\tb\"]", "byte 3: control byte in string"},
        {"{\"a\":1}\0", "byte 7: trailing bytes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i].text) + (i == sizeof bad / sizeof bad[0] - 1);
        node_json *j = node_json_parse(bad[i].text, len);
        TT_CHECK(j == NULL, "accepted '%s'", bad[i].text);
        TT_CHECK(shoal_error_code() == SHOAL_ERR_INVAL && strstr(shoal_error_message(), "malformed JSON at byte"),
                 "'%s': %s", bad[i].text, shoal_error_message());
        if (strcmp(bad[i].why, "json-c") != 0)
            TT_CHECK(strstr(shoal_error_message(), bad[i].why), "'%s': message '%s', wanted '%s'", bad[i].text,
                     shoal_error_message(), bad[i].why);
    }
}

TT_TEST(test_node_json_reads_64_bit_integers_exactly)
{
    const char *text = "[18446744073709551615,9223372036854775809,0,-9223372036854775808,-0.5,1e3]";
    node_json *j = node_json_parse(text, strlen(text));
    TT_CHECK(j && j->type == NODE_JSON_ARRAY, "parse: %s", shoal_error_message());
    const node_json *e = j->child;
    TT_CHECK(e->is_u64 && e->u64 == UINT64_MAX, "2^64-1 exact: %llu", (unsigned long long)e->u64);
    e = e->next;
    TT_CHECK(e->is_u64 && e->u64 == 9223372036854775809ull, "2^63+1 exact (a double would say ...808): %llu",
             (unsigned long long)e->u64);
    e = e->next;
    TT_CHECK(e->is_u64 && e->u64 == 0, "0");
    e = e->next;
    TT_CHECK(!e->is_u64 && e->num == -9223372036854775808.0, "a negative integer is a number, not a u64");
    e = e->next;
    TT_CHECK(!e->is_u64 && e->num == -0.5, "-0.5");
    e = e->next;
    TT_CHECK(!e->is_u64 && e->num == 1000, "1e3 is a number, not an integer");
    node_json_delete(j);

    /* The counters the daemon writes come back exact. */
    node_stats st;
    node_stats_create(&st);
    node_stats_set(&st.s3_get_requests, 9223372036854775809ull);
    shoal_buf b = {0};
    TT_OK(node_stats_render_json(&st, &b));
    j = node_json_parse(shoal_buf_str(&b), b.len);
    TT_CHECK(j && node_json_get_u64(j, "s3.get_requests", 0) == 9223372036854775809ull, "stats %s", shoal_buf_str(&b));
    node_json_delete(j);
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_status_document_bytes_are_compact_and_exact)
{
    node_status_member m[2] = {
        {.id = "node-a",
         .address = "10.0.0.1:7400",
         .zone = "z1",
         .state = "alive",
         .incarnation = 9223372036854775809ull,
         .cache_bytes = 0,
         .cache_known = true,
         .cache_capacity = UINT64_MAX,
         .serves = true},
        {.id = "q\"uo/te\\", .address = "10.0.0.2:7400", .state = "left", .incarnation = 1, .serves = false},
    };
    node_status s = {.node_id = "node-a",
                     .address = "10.0.0.1:7400",
                     .bucket = "s3://b/p",
                     .ring_version = 12,
                     .block_size = 4194304,
                     .uptime_seconds = 5,
                     .members = m,
                     .n_members = 2};
    shoal_buf b = {0};
    TT_OK(node_status_render_json(&s, &b));
    const char *want =
        "{\"node_id\":\"node-a\",\"address\":\"10.0.0.1:7400\",\"zone\":null,\"bucket\":\"s3://b/p\",\"ring_version\":12,"
        "\"block_size\":4194304,\"uptime_seconds\":5,\"ready\":false,\"waiting_for\":null,\"joined\":false,\"s3_checked\":false,\"mounted\":null,\"members\":[{\"id\":\"node-a\",\"address\":\"10.0.0.1:7400\","
        "\"zone\":\"z1\",\"state\":\"alive\",\"incarnation\":9223372036854775809,\"cache_bytes\":0,"
        "\"cache_capacity\":18446744073709551615,\"serves\":true},{\"id\":\"q\\\"uo/te\\\\\",\"address\":"
        "\"10.0.0.2:7400\",\"zone\":null,\"state\":\"left\",\"incarnation\":1,\"cache_bytes\":null,\"cache_capacity\":0,"
        "\"serves\":false}],\"cluster\":{\"alive\":1,\"suspect\":0,\"dead\":0,\"left\":1,\"cache_bytes\":0,"
        "\"cache_capacity\":18446744073709551615,\"cache_reporting\":1}}";
    TT_CHECK(strcmp(shoal_buf_str(&b), want) == 0, "status document\n got %s\nwant %s", shoal_buf_str(&b), want);
    s.n_members = 0;
    shoal_buf_reset(&b);
    TT_OK(node_status_render_json(&s, &b));
    TT_CHECK(strstr(shoal_buf_str(&b), ",\"members\":[],\"cluster\":{\"alive\":0,"), "no members: %s",
             shoal_buf_str(&b));
    shoal_buf_destroy(&b);
}

TT_MAIN()
