/*
 * Tests of node_config (flags, INI file, validation) and node_stats (the renderings). Each case
 * runs in its own process, so cases may set environment variables freely.
 */
#include "node_config.h"
#include "node_stats.h"
#include "shoal_error.h"
#include "shoal_size.h"
#include "tt.h"

#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *g_dir;
static char g_key[512];

/* A temp dir with a valid raw key file at g_key, and an environment without AWS or XDG hints. */
static void setup(void)
{
    g_dir = tt_tmpdir("node_config");
    snprintf(g_key, sizeof g_key, "%s/cluster.key", g_dir);
    int fd = open(g_key, O_WRONLY | O_CREAT | O_EXCL, 0600);
    TT_CHECK(fd >= 0, "create %s", g_key);
    uint8_t k[32];
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)(i * 7 + 1);
    TT_CHECK(write(fd, k, 32) == 32, "write key");
    close(fd);
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_CONFIG_FILE");
    unsetenv("XDG_RUNTIME_DIR");
    setenv("HOME", g_dir, 1);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    TT_CHECK(fd >= 0, "create %s", path);
    TT_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", path);
    close(fd);
}

/* Parses "shoald" followed by the NULL-terminated arguments. */
static int parse(node_config *cfg, ...)
{
    char *argv[96];
    int argc = 0;
    va_list ap;
    argv[argc++] = "shoald";
    va_start(ap, cfg);
    for (char *a; (a = va_arg(ap, char *));) {
        TT_CHECK(argc < 95, "parse: more arguments than the test's argv holds");
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return node_config_parse(argc, argv, cfg);
}

static const char *addr_text(const shoal_addr *a)
{
    static char buf[SHOAL_ADDR_STRLEN];
    return shoal_addr_format(a, buf);
}

TT_TEST(test_node_config_defaults_applied)
{
    node_config cfg;
    char host[256] = "";
    setup();
    gethostname(host, sizeof host - 1);
    TT_OK(parse(&cfg, "--bucket", "s3://my-bucket", "--cluster-key", g_key, "--advertise", "10.1.2.3:7400", NULL));
    TT_CHECK(!strcmp(cfg.node_id, host), "node_id=%s host=%s", cfg.node_id, host);
    TT_CHECK(!strcmp(addr_text(&cfg.bind), "0.0.0.0:7400"), "bind=%s", addr_text(&cfg.bind));
    TT_CHECK(cfg.n_seeds == 0, "seeds=%zu", cfg.n_seeds);
    TT_CHECK(!strcmp(cfg.bucket, "my-bucket") && !strcmp(cfg.prefix, ""), "bucket=%s prefix=%s", cfg.bucket,
             cfg.prefix);
    TT_CHECK(cfg.endpoint == NULL && !cfg.path_style, "endpoint=%s", cfg.endpoint);
    TT_CHECK(!strcmp(cfg.region, "us-east-1"), "region=%s", cfg.region);
    TT_CHECK(!strcmp(cfg.cache_dir, "/var/cache/shoal"), "cache_dir=%s", cfg.cache_dir);
    TT_CHECK(cfg.cache_size == 10ull << 30, "cache_size=%llu", (unsigned long long)cfg.cache_size);
    TT_CHECK(cfg.block_size == 4ull << 20, "block_size=%llu", (unsigned long long)cfg.block_size);
    TT_CHECK(cfg.replicas == 1 && cfg.zone == NULL && !cfg.no_serve, "replicas=%u", cfg.replicas);
    TT_CHECK(cfg.fetch_buffers == 0, "fetch_buffers=%u (0: the default from the block size)", cfg.fetch_buffers);
    TT_CHECK(cfg.mount == NULL && !cfg.read_only, "mount=%s", cfg.mount);
    TT_CHECK(cfg.metadata_ttl == 60 && cfg.negative_ttl == 5, "ttl=%u/%u", cfg.metadata_ttl, cfg.negative_ttl);
    TT_CHECK(cfg.upload_delay == 0, "default upload delay %u", cfg.upload_delay);
    TT_CHECK(!cfg.allow_other && !cfg.uid_set && !cfg.gid_set && cfg.file_mode == 0644 && cfg.dir_mode == 0755,
             "mount permission defaults");
    TT_CHECK(cfg.peer_timeout_ms == 2000, "default peer timeout %u", cfg.peer_timeout_ms);
    TT_CHECK(cfg.s3_stall_timeout == 5, "default S3 stall timeout %u", cfg.s3_stall_timeout);
    TT_CHECK(cfg.drain_timeout == 20, "default drain timeout %u", cfg.drain_timeout);
    TT_CHECK(!strcmp(cfg.state_dir, "/var/cache/shoal/state"), "state_dir=%s", cfg.state_dir);
    TT_CHECK(!strcmp(cfg.control, "/run/shoal/shoald.sock"), "control=%s", cfg.control);
    TT_CHECK(cfg.metrics_enabled && !strcmp(addr_text(&cfg.metrics), "127.0.0.1:9464"), "metrics=%s",
             addr_text(&cfg.metrics));
    TT_CHECK(cfg.log_level == SHOAL_LOG_INFO && !cfg.no_sign_request, "log_level=%d", (int)cfg.log_level);
    TT_CHECK(cfg.cluster_key[0] == 1 && cfg.cluster_key[31] == (uint8_t)(31 * 7 + 1), "key bytes not loaded");
    node_config_destroy(&cfg);
}

TT_TEST(test_node_config_state_dir_and_control_follow_their_bases)
{
    node_config cfg;
    setup();
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    TT_OK(parse(&cfg, "--bucket", "s3://b-1", "--cluster-key", g_key, "--advertise", "10.0.0.1:7400", "--cache-dir",
                "/data/cache", NULL));
    TT_CHECK(!strcmp(cfg.state_dir, "/data/cache/state"), "state_dir=%s", cfg.state_dir);
    TT_CHECK(!strcmp(cfg.control, "/run/user/1000/shoal/shoald.sock"), "control=%s", cfg.control);
    node_config_destroy(&cfg);
}

TT_TEST(test_node_config_every_flag_is_applied)
{
    node_config cfg;
    setup();
    TT_OK(parse(&cfg, "--node-id", "n-1", "--bind", "127.0.0.2:7500", "--advertise", "10.0.0.2:7500", "--seeds",
                "127.0.0.1:7400, node-b.example:7401,[::1]:7402", "--bucket", "s3://data.set/train/imgs/", "--endpoint",
                "http://127.0.0.1:4569/", "--path-style", "--region", "eu-west-3", "--cache-dir", "/c", "--cache-size",
                "512M", "--block-size", "64K", "--replicas", "3", "--fetch-buffers", "12", "--zone", "rack-2",
                "--no-serve", "--mount", "/mnt/data", "--read-only", "--metadata-ttl", "0", "--negative-ttl", "30",
                "--peer-timeout", "750", "--s3-stall-timeout", "12", "--upload-delay", "15", "--drain-timeout", "0",
                "--allow-other", "--uid", "1000", "--gid", "0", "--file-mode", "0440", "--dir-mode", "750",
                "--cluster-key", g_key, "--state-dir", "/s", "--control", "/tmp/x.sock", "--metrics", "off",
                "--log-level", "debug", "--log-format", "json", "--no-sign-request", NULL));
    TT_CHECK(!strcmp(cfg.node_id, "n-1"), "node_id=%s", cfg.node_id);
    TT_CHECK(cfg.log_level == SHOAL_LOG_DEBUG && cfg.log_format == SHOAL_LOG_JSON, "log level %d format %d",
             cfg.log_level, cfg.log_format);
    TT_CHECK(!strcmp(addr_text(&cfg.bind), "127.0.0.2:7500"), "bind=%s", addr_text(&cfg.bind));
    TT_CHECK(!strcmp(addr_text(&cfg.advertise), "10.0.0.2:7500"), "advertise=%s", addr_text(&cfg.advertise));
    TT_CHECK(cfg.n_seeds == 3, "n_seeds=%zu", cfg.n_seeds);
    TT_CHECK(!strcmp(cfg.seeds[0].host, "127.0.0.1") && cfg.seeds[0].port == 7400, "seed0=%s:%u", cfg.seeds[0].host,
             cfg.seeds[0].port);
    TT_CHECK(!strcmp(cfg.seeds[1].host, "node-b.example") && cfg.seeds[1].port == 7401, "seed1=%s", cfg.seeds[1].host);
    TT_CHECK(!strcmp(cfg.seeds[2].host, "::1") && cfg.seeds[2].port == 7402, "seed2=%s", cfg.seeds[2].host);
    TT_CHECK(!strcmp(cfg.bucket, "data.set") && !strcmp(cfg.prefix, "train/imgs/"), "bucket=%s prefix=%s",
             cfg.bucket, cfg.prefix);
    TT_CHECK(!strcmp(cfg.endpoint, "http://127.0.0.1:4569") && cfg.path_style, "endpoint=%s", cfg.endpoint);
    TT_CHECK(!strcmp(cfg.region, "eu-west-3"), "region=%s", cfg.region);
    TT_CHECK(cfg.cache_size == 512ull << 20 && cfg.block_size == 64 << 10, "sizes=%llu/%llu",
             (unsigned long long)cfg.cache_size, (unsigned long long)cfg.block_size);
    TT_CHECK(cfg.replicas == 3 && !strcmp(cfg.zone, "rack-2") && cfg.no_serve, "replicas=%u", cfg.replicas);
    TT_CHECK(cfg.fetch_buffers == 12, "fetch_buffers=%u", cfg.fetch_buffers);
    TT_CHECK(!strcmp(cfg.mount, "/mnt/data") && cfg.read_only, "mount=%s", cfg.mount);
    TT_CHECK(cfg.metadata_ttl == 0 && cfg.negative_ttl == 30, "ttl=%u/%u", cfg.metadata_ttl, cfg.negative_ttl);
    TT_CHECK(cfg.peer_timeout_ms == 750, "peer_timeout_ms=%u", cfg.peer_timeout_ms);
    TT_CHECK(cfg.s3_stall_timeout == 12, "s3_stall_timeout=%u", cfg.s3_stall_timeout);
    TT_CHECK(cfg.upload_delay == 15, "upload_delay=%u", cfg.upload_delay);
    TT_CHECK(cfg.drain_timeout == 0, "drain_timeout=%u", cfg.drain_timeout);
    TT_CHECK(cfg.allow_other && cfg.uid_set && cfg.uid == 1000 && cfg.gid_set && cfg.gid == 0, "allow_other/uid/gid");
    TT_CHECK(cfg.file_mode == 0440 && cfg.dir_mode == 0750, "modes %o %o", cfg.file_mode, cfg.dir_mode);
    TT_CHECK(!strcmp(cfg.state_dir, "/s") && !strcmp(cfg.control, "/tmp/x.sock"), "state=%s", cfg.state_dir);
    TT_CHECK(!cfg.metrics_enabled, "metrics off not applied");
    TT_CHECK(cfg.log_level == SHOAL_LOG_DEBUG && cfg.no_sign_request, "log_level=%d", (int)cfg.log_level);
    node_config_destroy(&cfg);
}

TT_TEST(test_node_config_flag_overrides_ini)
{
    node_config cfg;
    char ini[600], text[800];
    setup();
    snprintf(ini, sizeof ini, "%s/shoald.ini", g_dir);
    snprintf(text, sizeof text,
             "; shoald config\n"
             "bucket = s3://from-file/p\n"
             "cluster-key = %s\n"
             "cache-size = 2G\n"
             "replicas = 2\n"
             "advertise = 10.0.0.9:7400\n"
             "[shoald]\n"
             "zone = z-file\n"
             "no-serve = yes\n",
             g_key);
    write_file(ini, text, 0644);
    TT_OK(parse(&cfg, "--config", ini, "--replicas", "3", "--zone", "z-flag", NULL));
    TT_CHECK(cfg.replicas == 3, "flag did not win: replicas=%u", cfg.replicas);
    TT_CHECK(!strcmp(cfg.zone, "z-flag"), "flag did not win: zone=%s", cfg.zone);
    TT_CHECK(cfg.cache_size == 2ull << 30, "file value lost: cache_size=%llu", (unsigned long long)cfg.cache_size);
    TT_CHECK(!strcmp(cfg.bucket, "from-file") && !strcmp(cfg.prefix, "p/"), "bucket=%s prefix=%s", cfg.bucket,
             cfg.prefix);
    TT_CHECK(cfg.no_serve, "no-serve = yes not applied");
    TT_CHECK(!strcmp(cfg.config_file, ini), "config_file=%s", cfg.config_file);
    node_config_destroy(&cfg);
}

/* shoald reads sizes with the grammar shoal-sim uses (common/shoal_size.h): a bare letter and
 * KiB..TiB are powers of 1024, KB..TB powers of 1000, so "100G" means one size in every program. */
TT_TEST(test_node_config_sizes_read_as_shoal_sim_reads_them)
{
    static const struct { const char *text; uint64_t want; } ok[] = {
        {"100G", 100ull << 30}, {"100GiB", 100ull << 30}, {"100GB", 100000000000ull}, {"1.5G", 3ull << 29},
        {"8388608", 8388608}, {"2T", 2ull << 40}, {"500MB", 500000000ull},
    };
    static const char *const bad[] = {"", "10X", "G", "-1", " 1G", "99999999999999999999", "16777216TiB", "0"};
    setup();
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        node_config cfg;
        TT_OK(parse(&cfg, "--bucket", "s3://bkt", "--cluster-key", g_key, "--advertise", "10.0.0.1:7400", "--cache-size",
                    ok[i].text, NULL));
        uint64_t sim = 0;
        TT_OK(shoal_parse_size(ok[i].text, &sim));
        TT_CHECK(cfg.cache_size == ok[i].want && sim == ok[i].want, "'%s': shoald %llu, shoal-sim %llu, want %llu",
                 ok[i].text, (unsigned long long)cfg.cache_size, (unsigned long long)sim,
                 (unsigned long long)ok[i].want);
        node_config_destroy(&cfg);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        node_config cfg;
        TT_CHECK(parse(&cfg, "--bucket", "s3://bkt", "--cluster-key", g_key, "--advertise", "10.0.0.1:7400",
                       "--cache-size", bad[i], NULL) < 0,
                 "--cache-size '%s' accepted", bad[i]);
        TT_CHECK(strstr(shoal_error_message(), "--cache-size") != NULL, "the error does not name the flag: %s",
                 shoal_error_message());
    }
}

/* Every bad value: -1, SHOAL_ERR_NODE_CONFIG, one line that names the flag and quotes enough of
 * the problem to act on. */
TT_TEST(test_node_config_bad_values_name_the_flag)
{
    struct bad_case { const char *flag, *value, *want; };
    static const struct bad_case cases[] = {
        {"--cache-size", "10X", "--cache-size: '10X' is not a size"},
        {"--cache-size", "0", "--cache-size: must be more than 0"},
        {"--cache-size", "1K", "--cache-size: 1024 bytes is smaller than one block"},
        {"--block-size", "0", "--block-size: '0' must be a power of two"},
        {"--block-size", "3M", "--block-size: '3M' must be a power of two"},
        {"--block-size", "2G", "--block-size: '2G' must be a power of two"},
        {"--replicas", "0", "--replicas: '0' is not a number from 1 to 16"},
        {"--replicas", "two", "--replicas: 'two' is not a number"},
        {"--fetch-buffers", "1", "--fetch-buffers: '1' is not a number from 2 to 4096"},
        {"--fetch-buffers", "4097", "--fetch-buffers: '4097' is not a number from 2 to 4096"},
        {"--fetch-buffers", "lots", "--fetch-buffers: 'lots' is not a number"},
        {"--bind", "0.0.0.0", "--bind: bad address '0.0.0.0': expected ADDR:PORT"},
        {"--bind", "host:7400", "--bind: bad address 'host:7400'"},
        {"--bind", "1.2.3.4:70000", "--bind: bad address '1.2.3.4:70000': port"},
        {"--advertise", "0.0.0.0:7400", "--advertise: '0.0.0.0:7400' is not an address other nodes can dial"},
        {"--seeds", "a:1,,b:2", "--seeds: '' is not HOST:PORT"},
        {"--seeds", "nohost", "--seeds: 'nohost' is not HOST:PORT"},
        {"--seeds", "h:0", "--seeds: 'h:0' is not HOST:PORT"},
        {"--bucket", "my-bucket", "--bucket: 'my-bucket' is not an S3 URL"},
        {"--bucket", "s3://", "--bucket: 's3://': '' is not a valid bucket name"},
        {"--bucket", "s3://ab/x", "--bucket: 's3://ab/x': 'ab' is not a valid bucket name"},
        {"--bucket", "s3://bad bucket/x", "is not a valid bucket name"},
        {"--endpoint", "127.0.0.1:4569", "--endpoint: '127.0.0.1:4569' is not an http:// or https:// URL"},
        {"--endpoint", "http://", "--endpoint: 'http://' has no host"},
        {"--region", "EU WEST", "--region: 'EU WEST' is not a region name"},
        {"--node-id", "a b", "--node-id: 'a b' is not a node id"},
        {"--zone", "", "--zone: '' is not a zone name"},
        {"--metadata-ttl", "-1", "--metadata-ttl: '-1' is not a number of seconds"},
        {"--negative-ttl", "5s", "--negative-ttl: '5s' is not a number of seconds"},
        {"--upload-delay", "-3", "--upload-delay: '-3' is not a number of seconds"},
        {"--upload-delay", "0.5", "--upload-delay: '0.5' is not a number of seconds"},
        {"--drain-timeout", "-5", "--drain-timeout: '-5' is not a number of seconds from 0 to 86400"},
        {"--drain-timeout", "86401", "--drain-timeout: '86401' is not a number of seconds"},
        {"--drain-timeout", "20s", "--drain-timeout: '20s' is not a number of seconds"},
        {"--peer-timeout", "10", "--peer-timeout: '10' is not a number of milliseconds from 50 to 600000"},
        {"--peer-timeout", "2s", "--peer-timeout: '2s' is not a number of milliseconds"},
        {"--s3-stall-timeout", "0", "--s3-stall-timeout: '0' is not a number of seconds from 1 to 600"},
        {"--s3-stall-timeout", "2.5", "--s3-stall-timeout: '2.5' is not a number of seconds"},
        {"--uid", "-1", "--uid: '-1' is not a numeric user id"},
        {"--gid", "wheel", "--gid: 'wheel' is not a numeric group id"},
        {"--file-mode", "0888", "--file-mode: '0888' is not an octal mode from 0 to 7777"},
        {"--dir-mode", "17777", "--dir-mode: '17777' is not an octal mode"},
        {"--log-level", "verbose", "--log-level: 'verbose' is not a log level (error, warn, info, debug)"},
        {"--log-format", "text", "--log-format: 'text' is not a log format (logfmt, json)"},
        {"--metrics", "9464", "--metrics: bad address '9464'"},
        {"--metrics", "on", "--metrics: bad address 'on'"},
        {"--control", "", "--control: empty path"},
        {"--cache-dir", "", "--cache-dir: empty path"},
        {"--cluster-key", "/nonexistent/key", "--cluster-key: cannot open '/nonexistent/key'"},
    };
    setup();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        node_config cfg;
        int rc = parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, "--advertise", "10.0.0.1:1",
                       cases[i].flag, cases[i].value, NULL);
        const char *msg = shoal_error_message();
        TT_CHECK(rc == -1, "%s %s: accepted (rc=%d)", cases[i].flag, cases[i].value, rc);
        TT_CHECK(shoal_error_code() == SHOAL_ERR_NODE_CONFIG, "%s %s: code %s", cases[i].flag, cases[i].value,
                 shoal_error_name(shoal_error_code()));
        TT_CHECK(strstr(msg, cases[i].want) != NULL, "%s %s: message '%s' lacks '%s'", cases[i].flag,
                 cases[i].value, msg, cases[i].want);
        TT_CHECK(strchr(msg, '\n') == NULL, "%s: message spans lines: '%s'", cases[i].flag, msg);
    }
}

TT_TEST(test_node_config_bad_command_lines_are_rejected)
{
    struct bad_case { const char *a1, *a2, *want; };
    static const struct bad_case cases[] = {
        {"--bogus", NULL, "--bogus: unknown option"},
        {"--bogus=1", NULL, "--bogus: unknown option"},
        {"-x", NULL, "-x: unknown option"},
        {"--no-serve=yes", NULL, "--no-serve: takes no value"},
        {"stray", NULL, "unexpected argument 'stray'"},
        {"--replicas", NULL, "--replicas: missing value"},
    };
    setup();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        node_config cfg;
        int rc = parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, cases[i].a1, cases[i].a2, NULL);
        TT_CHECK(rc == -1, "%s: accepted", cases[i].a1);
        TT_CHECK(strstr(shoal_error_message(), cases[i].want), "%s: message '%s' lacks '%s'", cases[i].a1,
                 shoal_error_message(), cases[i].want);
    }
}

TT_TEST(test_node_config_missing_required_options)
{
    node_config cfg;
    setup();
    TT_CHECK(parse(&cfg, "--cluster-key", g_key, NULL) == -1, "no --bucket accepted");
    TT_CHECK(strstr(shoal_error_message(), "--bucket: required"), "msg=%s", shoal_error_message());
    TT_CHECK(parse(&cfg, "--bucket", "s3://good-bucket", NULL) == -1, "no --cluster-key accepted");
    TT_CHECK(strstr(shoal_error_message(), "--cluster-key: required"), "msg=%s", shoal_error_message());
}

TT_TEST(test_node_config_key_file_must_be_32_bytes_or_64_hex)
{
    node_config cfg;
    char path[600];
    setup();
    snprintf(path, sizeof path, "%s/short.key", g_dir);
    write_file(path, "0123456789abcdef0123456789abcdef0", 0600); /* 33 bytes */
    TT_CHECK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", path, NULL) == -1, "33-byte key accepted");
    TT_CHECK(strstr(shoal_error_message(), "--cluster-key:") && strstr(shoal_error_message(), "holds 33 bytes"),
             "msg=%s", shoal_error_message());
    write_file(path, "", 0600);
    TT_CHECK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", path, NULL) == -1, "empty key accepted");
    TT_CHECK(strstr(shoal_error_message(), "holds 0 bytes"), "msg=%s", shoal_error_message());
    write_file(path, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 0600);
    TT_OK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", path, "--advertise", "10.0.0.1:1", NULL));
    TT_CHECK(cfg.cluster_key[0] == 0 && cfg.cluster_key[1] == 1 && cfg.cluster_key[31] == 0x1f,
             "hex key decoded wrong: %02x %02x", cfg.cluster_key[1], cfg.cluster_key[31]);
    node_config_destroy(&cfg);
    write_file(path, "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 0600);
    TT_CHECK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", path, NULL) == -1, "non-hex accepted");
}

static char g_log[2048];

static void capture_log(void *ud, shoal_log_level level, const char *line)
{
    if (level == SHOAL_LOG_WARN)
        snprintf(g_log + strlen(g_log), sizeof g_log - strlen(g_log), "%s\n", line);
}

TT_TEST(test_node_config_key_readable_by_others_is_warned_about)
{
    uint8_t key[32];
    setup();
    shoal_log_set_sink(capture_log, NULL);
    TT_OK(node_config_load_key(g_key, key));
    TT_CHECK(g_log[0] == '\0', "warning for a 0600 key: %s", g_log);
    chmod(g_key, 0644);
    TT_OK(node_config_load_key(g_key, key));
    shoal_log_set_sink(NULL, NULL);
    TT_CHECK(strstr(g_log, "event=cluster_key_mode") && strstr(g_log, "mode=0644") && strstr(g_log, g_key),
             "log: %s", g_log);
}

TT_TEST(test_node_config_unknown_ini_key_names_file_and_line)
{
    node_config cfg;
    char ini[600];
    setup();
    snprintf(ini, sizeof ini, "%s/bad.ini", g_dir);
    write_file(ini, "bucket = s3://good-bucket\n\n# comment\ncache_size = 1G\n", 0644);
    TT_CHECK(parse(&cfg, "--config", ini, NULL) == -1, "unknown key accepted");
    TT_CHECK(strstr(shoal_error_message(), ":4: unknown key 'cache_size'") && strstr(shoal_error_message(), ini),
             "msg=%s", shoal_error_message());
    write_file(ini, "replicas = 1\nreplicas = 2\n", 0644);
    TT_CHECK(parse(&cfg, "--config", ini, NULL) == -1, "repeated key accepted");
    TT_CHECK(strstr(shoal_error_message(), ":2: replicas: given twice"), "msg=%s", shoal_error_message());
    write_file(ini, "[aws]\nregion = x\n", 0644);
    TT_CHECK(parse(&cfg, "--config", ini, NULL) == -1, "unknown section accepted");
    TT_CHECK(strstr(shoal_error_message(), "unknown section [aws]"), "msg=%s", shoal_error_message());
    write_file(ini, "just words\n", 0644);
    TT_CHECK(parse(&cfg, "--config", ini, NULL) == -1, "syntax error accepted");
    TT_CHECK(strstr(shoal_error_message(), ":1: syntax error"), "msg=%s", shoal_error_message());
    TT_CHECK(parse(&cfg, "--config", "/nonexistent.ini", NULL) == -1, "missing config accepted");
    TT_CHECK(strstr(shoal_error_message(), "--config: cannot open '/nonexistent.ini'"), "msg=%s",
             shoal_error_message());
}

TT_TEST(test_node_config_bad_ini_value_names_file_line_and_key)
{
    node_config cfg;
    char ini[600], text[800];
    setup();
    snprintf(ini, sizeof ini, "%s/v.ini", g_dir);
    snprintf(text, sizeof text, "bucket = s3://good-bucket\ncluster-key = %s\nblock-size = 3M\n", g_key);
    write_file(ini, text, 0644);
    TT_CHECK(parse(&cfg, "--config", ini, NULL) == -1, "bad block-size accepted");
    char want[700];
    snprintf(want, sizeof want, "config %s:3: block-size: '3M' must be a power of two", ini);
    TT_CHECK(strstr(shoal_error_message(), want), "msg=%s want=%s", shoal_error_message(), want);
    /* the same bad value overridden by a good flag is fine: the flag wins */
    TT_OK(parse(&cfg, "--config", ini, "--block-size", "1M", "--advertise", "10.0.0.1:1", NULL));
    TT_CHECK(cfg.block_size == 1 << 20, "block_size=%llu", (unsigned long long)cfg.block_size);
    node_config_destroy(&cfg);
}

/* --cache-free-space: a percentage from 0 to 50, two decimals at most, '%' optional; default 5;
 * the same from the config file; anything else is one line naming the flag or the key. */
TT_TEST(test_node_config_cache_free_space_takes_a_percentage)
{
    static const struct { const char *text; unsigned bp; } ok[] = {
        {"0", 0}, {"5", 500}, {"5%", 500}, {"2.5", 250}, {"0.25%", 25}, {"12.75", 1275}, {"50", 5000}, {"050", 5000},
    };
    static const char *const bad[] = {"", "51", "100", "-1", "5.", ".5", "2.555", "5%%", "%", "five", "5 %", "1e1"};
    node_config cfg;
    setup();
    TT_OK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, "--advertise", "10.0.0.1:1", NULL));
    TT_CHECK(cfg.cache_free_space_bp == 500, "default --cache-free-space: %u hundredths of a percent, want 500",
             cfg.cache_free_space_bp);
    node_config_destroy(&cfg);
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        TT_OK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, "--advertise", "10.0.0.1:1",
                    "--cache-free-space", ok[i].text, NULL));
        TT_CHECK(cfg.cache_free_space_bp == ok[i].bp, "'%s' -> %u, want %u", ok[i].text, cfg.cache_free_space_bp,
                 ok[i].bp);
        node_config_destroy(&cfg);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, "--advertise", "10.0.0.1:1",
                       "--cache-free-space", bad[i], NULL);
        char want[120];
        snprintf(want, sizeof want, "--cache-free-space: '%s' is not a percentage from 0 to 50", bad[i]);
        TT_CHECK(rc == -1 && shoal_error_code() == SHOAL_ERR_NODE_CONFIG, "'%s' accepted", bad[i]);
        TT_CHECK(strstr(shoal_error_message(), want) && !strchr(shoal_error_message(), '\n'), "'%s': message '%s'",
                 bad[i], shoal_error_message());
    }
    char ini[600], text[800];
    snprintf(ini, sizeof ini, "%s/free.ini", g_dir);
    snprintf(text, sizeof text, "bucket = s3://good-bucket\ncluster-key = %s\ncache-free-space = 7.5%%\n", g_key);
    write_file(ini, text, 0644);
    TT_OK(parse(&cfg, "--config", ini, "--advertise", "10.0.0.1:1", NULL));
    TT_CHECK(cfg.cache_free_space_bp == 750, "cache-free-space = 7.5%% from the file: %u", cfg.cache_free_space_bp);
    node_config_destroy(&cfg);
    snprintf(text, sizeof text, "bucket = s3://good-bucket\ncluster-key = %s\ncache-free-space = 60\n", g_key);
    write_file(ini, text, 0644);
    TT_CHECK(parse(&cfg, "--config", ini, NULL) == -1, "cache-free-space = 60 accepted from the file");
    snprintf(text, sizeof text, "config %s:3: cache-free-space: '60' is not a percentage", ini);
    TT_CHECK(strstr(shoal_error_message(), text), "message '%s' lacks '%s'", shoal_error_message(), text);
}

/* The test seam is a command-line flag only: parsed and checked, never shown by --help, and an
 * unknown key in a config file like any other. */
TT_TEST(test_node_config_test_seam_is_a_flag_only)
{
    node_config cfg;
    char ini[600];
    setup();
    TT_OK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, "--test-gossip-period", "100",
                NULL));
    TT_CHECK(cfg.test_gossip_period_ms == 100, "period=%u", cfg.test_gossip_period_ms);
    node_config_destroy(&cfg);
    TT_OK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, NULL));
    TT_CHECK(cfg.test_gossip_period_ms == 0, "seam set by default");
    node_config_destroy(&cfg);
    TT_CHECK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, "--test-gossip-period", "5", NULL) == -1 &&
                 strstr(shoal_error_message(), "--test-gossip-period: '5' is not a number of milliseconds from 10"),
             "msg=%s", shoal_error_message());
    snprintf(ini, sizeof ini, "%s/seam.ini", g_dir);
    write_file(ini, "bucket = s3://good-bucket\ntest-gossip-period = 100\n", 0644);
    TT_CHECK(parse(&cfg, "--config", ini, "--cluster-key", g_key, NULL) == -1 &&
                 strstr(shoal_error_message(), ":2: unknown key 'test-gossip-period'"),
             "msg=%s", shoal_error_message());
    FILE *f = tmpfile();
    node_config_usage(f);
    char text[8192] = "";
    rewind(f);
    text[fread(text, 1, sizeof text - 1, f)] = '\0';
    fclose(f);
    TT_CHECK(strstr(text, "--state-dir") && !strstr(text, "--test-"), "usage: %s", text);
}

TT_TEST(test_node_config_region_follows_aws_order)
{
    node_config cfg;
    char conf[600];
    setup();
    snprintf(conf, sizeof conf, "%s/aws-config", g_dir);
    write_file(conf, "[default]\nregion = ap-south-1\n[profile train]\nregion = eu-north-1\n", 0644);
    setenv("AWS_CONFIG_FILE", conf, 1);
    const char *base[] = {"--bucket", "s3://good-bucket", "--cluster-key", g_key, "--advertise", "10.0.0.1:1"};
#define PARSE(...) parse(&cfg, base[0], base[1], base[2], base[3], base[4], base[5], __VA_ARGS__)
    TT_OK(PARSE(NULL));
    TT_CHECK(!strcmp(cfg.region, "ap-south-1"), "default profile: region=%s", cfg.region);
    node_config_destroy(&cfg);
    setenv("AWS_PROFILE", "train", 1);
    TT_OK(PARSE(NULL));
    TT_CHECK(!strcmp(cfg.region, "eu-north-1"), "AWS_PROFILE: region=%s", cfg.region);
    node_config_destroy(&cfg);
    setenv("AWS_DEFAULT_REGION", "us-west-1", 1);
    TT_OK(PARSE(NULL));
    TT_CHECK(!strcmp(cfg.region, "us-west-1"), "AWS_DEFAULT_REGION: region=%s", cfg.region);
    node_config_destroy(&cfg);
    setenv("AWS_REGION", "us-west-2", 1);
    TT_OK(PARSE(NULL));
    TT_CHECK(!strcmp(cfg.region, "us-west-2"), "AWS_REGION: region=%s", cfg.region);
    node_config_destroy(&cfg);
    TT_OK(PARSE("--region", "sa-east-1", NULL));
    TT_CHECK(!strcmp(cfg.region, "sa-east-1"), "--region: region=%s", cfg.region);
    node_config_destroy(&cfg);
#undef PARSE
}

TT_TEST(test_node_config_advertise_derived_from_bind)
{
    node_config cfg;
    char b[SHOAL_ADDR_STRLEN];
    setup();
    TT_OK(parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, "--bind", "127.0.0.3:7411", NULL));
    TT_CHECK(shoal_addr_eq(&cfg.advertise, &cfg.bind), "advertise=%s", shoal_addr_format(&cfg.advertise, b));
    node_config_destroy(&cfg);
    /* The wildcard bind: either an address of a non-loopback interface or a clear demand for --advertise. */
    if (parse(&cfg, "--bucket", "s3://good-bucket", "--cluster-key", g_key, NULL) == 0) {
        TT_CHECK(cfg.advertise.family == 4 && cfg.advertise.ip[0] != 127 && cfg.advertise.ip[0] != 0 &&
                     cfg.advertise.port == 7400,
                 "derived advertise=%s", shoal_addr_format(&cfg.advertise, b));
        node_config_destroy(&cfg);
    } else {
        TT_CHECK(strstr(shoal_error_message(), "--advertise: required"), "msg=%s", shoal_error_message());
    }
}

TT_TEST(test_node_config_help_and_version_return_1)
{
    node_config cfg;
    setup();
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    char out[600];
    snprintf(out, sizeof out, "%s/out.txt", g_dir);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDOUT_FILENO);
    int rh = parse(&cfg, "--help", NULL);
    int rv = parse(&cfg, "--bogus-ignored-not", "--version", NULL);
    int rv2 = parse(&cfg, "--version", NULL);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(fd);
    close(saved);
    TT_CHECK(rh == 1 && rv2 == 1, "help=%d version=%d", rh, rv2);
    TT_CHECK(rv == -1, "an unknown flag before --version must still be an error (rc=%d)", rv);
    char text[8192] = "";
    fd = open(out, O_RDONLY);
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    TT_CHECK(strstr(text, "--cache-size SIZE") && strstr(text, "--no-sign-request"), "usage lacks options: %s", text);
    TT_CHECK(strstr(text, "--upload-delay SECONDS"), "usage lacks --upload-delay: %s", text);
    TT_CHECK(strstr(text, "shoald " SHOAL_VERSION "\n"), "no version line in: %s", text);
}

TT_TEST(test_node_stats_json_has_every_spec_key)
{
    static const char *const spec[] = {"s3.get_requests", "s3.head_requests", "s3.list_requests", "s3.put_requests",
                                       "s3.bytes_in", "s3.bytes_out", "reads.local", "reads.peer", "reads.s3",
                                       "peer.bytes_in", "peer.bytes_out", "cache.bytes", "cache.capacity",
                                       "members.alive", "members.suspect", "members.dead"};
    node_stats s;
    shoal_buf b = {0};
    node_stats_create(&s);
    node_stats_add(&s.s3_get_requests, 3);
    node_stats_add(&s.s3_get_requests, 4);
    node_stats_set(&s.cache_capacity, 10ull << 30);
    TT_OK(node_stats_render_json(&s, &b));
    const char *j = shoal_buf_str(&b);
    TT_CHECK(j[0] == '{' && j[b.len - 1] == '}' && !strchr(j, '\n'), "not one object: %s", j);
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\":", spec[i]);
        TT_CHECK(strstr(j, key), "missing %s in %s", spec[i], j);
    }
    TT_CHECK(strstr(j, "\"s3.get_requests\":7,"), "counter not summed: %s", j);
    TT_CHECK(strstr(j, "\"cache.capacity\":10737418240"), "gauge not set: %s", j);
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_stats_prometheus_names_types_and_values)
{
    node_stats s;
    shoal_buf b = {0};
    node_stats_create(&s);
    node_stats_add(&s.reads_peer, 42);
    node_stats_set(&s.members_alive, 3);
    node_stats_set(&s.cache_bytes, 7);
    node_stats_add(&s.s3_failures[1][1], 2); /* head, no_such_key */
    shoal_hist_observe(&s.s3_latency[0], 3000);
    TT_OK(node_stats_render_prometheus(&s, &b));
    const char *t = shoal_buf_str(&b);
    TT_CHECK(strstr(t, "# TYPE shoal_block_reads_total counter\nshoal_block_reads_total{source=\"local\"} 0\n"
                       "shoal_block_reads_total{source=\"peer\"} 42\n"),
             "reads by source: %s", t);
    TT_CHECK(strstr(t, "# TYPE shoal_members gauge\nshoal_members{state=\"alive\"} 3\n"), "members: %s", t);
    TT_CHECK(strstr(t, "# TYPE shoal_cache_used_bytes gauge\nshoal_cache_used_bytes 7\n"), "cache bytes: %s", t);
    TT_CHECK(strstr(t, "\nshoal_s3_errors_total{op=\"head\",code=\"no_such_key\"} 2\n"), "errors: %s", t);
    TT_CHECK(!strstr(t, "shoal_s3_errors_total{op=\"get\""), "a failure that did not happen has a series: %s", t);
    TT_CHECK(strstr(t, "\nshoal_s3_request_duration_seconds_bucket{op=\"get\",le=\"0.0025\"} 0\n"
                       "shoal_s3_request_duration_seconds_bucket{op=\"get\",le=\"0.005\"} 1\n"),
             "S3 GET latency: %s", t);
    TT_CHECK(strstr(t, "\nshoal_s3_request_duration_seconds_count{op=\"get\"} 1\n"), "S3 GET count: %s", t);
    TT_CHECK(strstr(t, "# HELP shoal_peer_fetch_duration_seconds ") && strstr(t, "\nshoal_peer_fetch_duration_seconds_count 0\n"),
             "peer fetch histogram: %s", t);
    TT_CHECK(!strstr(t, "_total_total") && !strstr(t, "shoal_cache_used_bytes_total"), "suffixes: %s", t);
    /* Every field with a family has exactly one sample, and every family one HELP and one TYPE. */
    size_t n;
    const node_stats_desc *d = node_stats_fields(&n);
    for (size_t i = 0; i < n; i++) {
        if (!d[i].family)
            continue;
        char line[160];
        snprintf(line, sizeof line, "\n%s%s%s%s ", d[i].family, d[i].labels[0] ? "{" : "", d[i].labels,
                 d[i].labels[0] ? "}" : "");
        const char *hit = strstr(t, line);
        TT_CHECK(hit && !strstr(hit + 1, line), "%s: not exactly one sample '%s'", d[i].name, line + 1);
        snprintf(line, sizeof line, "# TYPE %s ", d[i].family);
        hit = strstr(t, line);
        TT_CHECK(hit && !strstr(hit + 1, line), "%s: not exactly one TYPE for %s", d[i].name, d[i].family);
    }
    shoal_buf_destroy(&b);
}

TT_MAIN()

/* Runs parse() with stdout captured into out (NUL-terminated); returns parse's result. */
static int parse_captured(node_config *cfg, char *out, size_t out_len, const char *config, const char *extra)
{
    char path[600];
    snprintf(path, sizeof path, "%s/captured.txt", g_dir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    TT_CHECK(saved >= 0 && fd >= 0, "capture stdout");
    dup2(fd, STDOUT_FILENO);
    int rc = parse(cfg, "--check-config", "--config", config, extra, NULL);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    ssize_t n = pread(fd, out, out_len - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    return rc;
}

/* `shoald --check-config` validates everything the daemon would (flags, the file, the key, the
 * derived defaults), says so on stdout and returns 1 (exit 0) without starting anything; a bad
 * value is the same one-line error as at start. Deployment files are checked this way. */
TT_TEST(test_node_config_check_config_validates_without_starting)
{
    node_config cfg;
    char out[1024], conf[600], text[1200];
    setup();
    snprintf(conf, sizeof conf, "%s/shoald.conf", g_dir);
    snprintf(text, sizeof text, "bucket = s3://bucket/p\ncluster-key = %s\nadvertise = 10.0.0.1:7400\n", g_key);
    write_file(conf, text, 0600);
    TT_CHECK(parse_captured(&cfg, out, sizeof out, conf, NULL) == 1, "a valid file: %s", shoal_error_message());
    TT_CHECK(strstr(out, "configuration OK") && strstr(out, conf), "stdout: %s", out);
    TT_CHECK(cfg.bucket == NULL && cfg.config_file == NULL, "cfg must hold nothing after a check");

    TT_CHECK(parse_captured(&cfg, out, sizeof out, conf, "--cache-size=10X") == -1, "a bad flag passed the check");
    TT_CHECK(strstr(shoal_error_message(), "--cache-size: '10X' is not a size"), "error: %s", shoal_error_message());
    TT_CHECK(out[0] == '\0', "nothing on stdout for a bad configuration: %s", out);

    snprintf(text, sizeof text, "bucket = s3://bucket/p\ncluster-key = %s/missing.key\n", g_dir);
    write_file(conf, text, 0600);
    TT_CHECK(parse_captured(&cfg, out, sizeof out, conf, NULL) == -1, "a missing key file passed the check");
    TT_CHECK(strstr(shoal_error_message(), "cluster-key"), "error: %s", shoal_error_message());
}
