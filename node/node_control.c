/*
 * node_control: the control socket (server and client) and the JSON it speaks.
 *
 * JSON. json-c reads and writes it; integers stay exact to 64 bits both ways, because counters are
 * uint64. node_json_parse hands json-c's tree over as node_json nodes (the callers' small,
 * allocation-only view), with a nesting limit, in json-c's strict mode, plus the few rules that
 * mode still leaves to us (json_check_strict): strings without raw control bytes, \u0000 or lone
 * surrogates (so they stay C strings of what was sent), numbers on JSON's grammar, integers that
 * fit 64 bits (json-c would clamp them), no NaN or Infinity. An object that names a member twice
 * keeps the last value (json-c's choice; nothing Shoal writes does it). What Shoal writes (request
 * and reply headers, the status document) is fixed forms around json-c's string escaping, with
 * integers printed exactly. The server never reads more than NODE_CONTROL_MAX_REQUEST bytes of a
 * request.
 *
 * Server. One accept thread polls the listening socket and a wake pipe; each connection gets a
 * detached thread that reads one request line (with a receive timeout, so a silent client
 * cannot pin a thread), dispatches it to the daemon's handler table and closes. A connection
 * count bounds the threads; node_control_server_delete shuts the open connections down (a
 * handler's next write fails with SHOAL_ERR_CLOSED) and waits for every thread to finish. Writes
 * use MSG_NOSIGNAL so a client that hangs up never raises SIGPIPE in the daemon.
 *
 * The socket must be 0600 from the first moment it exists. Linux takes a socket file's mode
 * from the umask at bind(), and changing the process umask would race with other threads, so we
 * bind a temporary name in the same directory, chmod it, and rename it into place. (A path so
 * long that no temporary name fits beside it is bound directly and chmod-ed at once; its parent
 * directory, made 0700 by us when missing, covers that instant.)
 *
 * Client. One connection per call: send the request line, read the header line through a small
 * buffer, then the body. Byte bodies carry their size, so a short stream is an error and not a
 * silently truncated file. A byte body moves with splice(2) (straight into an output pipe, or
 * through a relay pipe into a file), so no byte of the object enters user space on either side.
 *
 * Chunked byte bodies. `get` asks for them ("fds":true). The body is then a sequence of chunks,
 * each a 24-byte header: DATA chunks carry their bytes on the socket as above; an FD chunk
 * carries an open file (SCM_RIGHTS) and a range of it, which is what node_control_reply_sendfile
 * sends. The daemon verifies a block held on its disk and passes the block file itself; the
 * client copies the range straight to its output (copy_file_range, sendfile) so the bytes move
 * once, in the client, as with `cat`, instead of crossing the socket too. The client receives
 * every read with recvmsg, so a descriptor that arrives with buffered bytes is never lost; the
 * kernel hands over at most one sender message's descriptors per recvmsg, so a small queue holds
 * them until their header is parsed.
 */
#include "node_control.h"
#include "shoal_bytes.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_thread.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- JSON ------------------------------------------------------------------------------------- */

#define JSON_MAX_DEPTH 32

int node_json_append_str(shoal_buf *out, const char *s)
{
    json_object *o = json_object_new_string(s);
    const char *text =
        o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : NULL;
    int rc = text ? shoal_buf_append_str(out, text) : shoal_error_set(SHOAL_ERR_NOMEM, "out of memory writing JSON");
    json_object_put(o);
    return rc;
}

static int json_err(size_t at, const char *what)
{
    return shoal_error_set(SHOAL_ERR_INVAL, "malformed JSON at byte %zu: %s", at, what);
}

/* The escape \uXXXX at s (which json-c has read as four hex digits). */
static unsigned json_u_escape(const char *s)
{
    uint8_t b[2];
    shoal_unhex_ci(b, s + 2, 2);
    return (unsigned)b[0] << 8 | b[1];
}

/* Checks the string that opens at s[*i] (its closing quote is there: json-c read it) and moves *i
 * to that quote. */
static int json_check_string(const char *s, size_t *i)
{
    for (size_t k = *i + 1;; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"') {
            *i = k;
            return 0;
        }
        if (c < 0x20)
            return json_err(k, "control byte in string");
        if (c != '\\')
            continue;
        if (s[k + 1] != 'u') {
            k++;
            continue;
        }
        unsigned cp = json_u_escape(s + k);
        if (cp == 0)
            return json_err(k, "\\u0000 in string");
        if (cp >= 0xdc00 && cp < 0xe000)
            return json_err(k, "lone surrogate");
        if (cp >= 0xd800 && cp < 0xdc00) {
            unsigned lo = s[k + 6] == '\\' && s[k + 7] == 'u' ? json_u_escape(s + k + 6) : 0;
            if (lo < 0xdc00 || lo >= 0xe000)
                return json_err(k, "lone surrogate");
            k += 6;
        }
        k += 5;
    }
}

static size_t json_digits(const char *s, size_t k, size_t end)
{
    while (k < end && s[k] >= '0' && s[k] <= '9')
        k++;
    return k;
}

/* Checks the number at s[*i] against JSON's grammar, -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?,
 * and that an integer fits the 64 bits that carry it; moves *i to its last byte. */
static int json_check_number(const char *s, size_t *i, size_t end)
{
    size_t k = *i + (s[*i] == '-'), d = k;
    k = json_digits(s, k, end);
    bool bad = k == d || (s[d] == '0' && k - d > 1), integer = true;
    if (!bad && k < end && s[k] == '.') {
        d = k + 1;
        k = json_digits(s, d, end);
        bad = k == d;
        integer = false;
    }
    if (!bad && k < end && (s[k] == 'e' || s[k] == 'E')) {
        d = k + 1 + (k + 1 < end && (s[k + 1] == '+' || s[k + 1] == '-'));
        k = json_digits(s, d, end);
        bad = k == d;
        integer = false;
    }
    if (bad)
        return json_err(*i, "bad number");
    if (integer) {
        char tmp[32];
        size_t n = k - *i < sizeof tmp ? k - *i : sizeof tmp - 1; /* 31 digits overflow anyway */
        memcpy(tmp, s + *i, n);
        tmp[n] = '\0';
        errno = 0;
        if (tmp[0] == '-')
            (void)strtoll(tmp, NULL, 10);
        else
            (void)strtoull(tmp, NULL, 10);
        if (errno == ERANGE)
            return shoal_error_set(SHOAL_ERR_INVAL, "malformed JSON at byte %zu: integer out of range: %s%s", *i, tmp,
                                   n < k - *i ? "..." : "");
    }
    *i = k - 1;
    return 0;
}

/* json-c's strict mode still takes a few things the control protocol refuses; text[0..end) is
 * a document json-c accepted, so only these remain to check: control bytes, \u0000 and lone
 * surrogates in strings (strings stay C strings of what was sent), numbers off JSON's grammar
 * ("1.", "01", "-01"), integers beyond 64 bits (json-c would clamp them: counters must be
 * exact or refused), and NaN and Infinity. */
static int json_check_strict(const char *text, size_t end)
{
    for (size_t i = 0; i < end; i++) {
        char c = text[i];
        int rc = 0;
        if (c == '"')
            rc = json_check_string(text, &i);
        else if (c == '-' || (c >= '0' && c <= '9'))
            rc = json_check_number(text, &i, end);
        else if (c == 'N' || c == 'I')
            rc = json_err(i, "unexpected token");
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The node tree of a json-c value (NULL is JSON null); `key` is its member name, or NULL. */
static node_json *json_node(json_object *o, const char *key)
{
    node_json *j = calloc(1, sizeof *j);
    if (!j || (key && !(j->key = strdup(key))))
        goto fail;
    node_json **tail = &j->child;
    switch (json_object_get_type(o)) {
    case json_type_null: j->type = NODE_JSON_NULL; break;
    case json_type_boolean:
        j->type = NODE_JSON_BOOL;
        j->b = json_object_get_boolean(o);
        break;
    case json_type_double:
        j->type = NODE_JSON_NUMBER;
        j->num = json_object_get_double(o);
        break;
    case json_type_int:
        j->type = NODE_JSON_NUMBER;
        if (json_object_get_int64(o) < 0) {
            j->num = (double)json_object_get_int64(o);
        } else {
            j->is_u64 = true;
            j->u64 = json_object_get_uint64(o);
            j->num = (double)j->u64;
        }
        break;
    case json_type_string:
        j->type = NODE_JSON_STRING;
        if (!(j->str = strdup(json_object_get_string(o))))
            goto fail;
        break;
    case json_type_array:
        j->type = NODE_JSON_ARRAY;
        for (size_t i = 0; i < json_object_array_length(o); i++) {
            if (!(*tail = json_node(json_object_array_get_idx(o, i), NULL)))
                goto fail;
            tail = &(*tail)->next;
        }
        break;
    case json_type_object:
        j->type = NODE_JSON_OBJECT;
        json_object_object_foreach(o, name, member)
        {
            if (!(*tail = json_node(member, name)))
                goto fail;
            tail = &(*tail)->next;
        }
        break;
    }
    return j;
fail:
    node_json_delete(j);
    shoal_error_set(SHOAL_ERR_NOMEM, "out of memory parsing JSON");
    return NULL;
}

/* Where the bare word or number around text[at] begins: json-c stops inside a token it cannot
 * finish ("nul" of "not json"), the message names the token's first byte. */
static size_t json_token_start(const char *text, size_t at)
{
    while (at > 0 && (isalnum((unsigned char)text[at - 1]) || (text[at - 1] && strchr("+-.", text[at - 1]))))
        at--;
    return at;
}

node_json *node_json_parse(const char *text, size_t len)
{
    node_json *j = NULL;
    json_object *o = NULL;
    if (len > INT_MAX) {
        json_err(0, "document over 2 GiB");
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    if (!tok) {
        shoal_error_set(SHOAL_ERR_NOMEM, "out of memory parsing JSON");
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    o = json_tokener_parse_ex(tok, text, (int)len);
    size_t end = json_tokener_get_parse_end(tok);
    if (json_tokener_get_error(tok) == json_tokener_continue) {
        /* A value that only the end of the text ends (a number), or an unfinished one: json-c
         * sees the end in a terminating NUL. */
        o = json_tokener_parse_ex(tok, "", 1);
        end = len;
    }
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t rest = end;
    while (rest < len && (text[rest] == ' ' || text[rest] == '\t' || text[rest] == '\n' || text[rest] == '\r'))
        rest++;
    if (e == json_tokener_error_depth)
        json_err(end, "nested too deeply");
    else if (e != json_tokener_success)
        json_err(json_token_start(text, end), json_tokener_error_desc(e));
    else if (rest != len)
        json_err(rest, "trailing bytes after the value");
    else if (json_check_strict(text, end) == 0)
        j = json_node(o, NULL);
    json_object_put(o);
    json_tokener_free(tok);
    return j;
}

void node_json_delete(node_json *j)
{
    while (j) {
        node_json *next = j->next;
        node_json_delete(j->child);
        free(j->key);
        free(j->str);
        free(j);
        j = next;
    }
}

const node_json *node_json_get(const node_json *j, const char *key)
{
    if (!j || j->type != NODE_JSON_OBJECT)
        return NULL;
    for (const node_json *m = j->child; m; m = m->next)
        if (!strcmp(m->key, key))
            return m;
    return NULL;
}

const char *node_json_get_str(const node_json *j, const char *key, const char *fallback)
{
    const node_json *m = node_json_get(j, key);
    return m && m->type == NODE_JSON_STRING ? m->str : fallback;
}

uint64_t node_json_get_u64(const node_json *j, const char *key, uint64_t fallback)
{
    const node_json *m = node_json_get(j, key);
    return m && m->type == NODE_JSON_NUMBER && m->is_u64 ? m->u64 : fallback;
}

bool node_json_get_bool(const node_json *j, const char *key, bool fallback)
{
    const node_json *m = node_json_get(j, key);
    return m && m->type == NODE_JSON_BOOL ? m->b : fallback;
}

/* ---- status document ------------------------------------------------------------------------ */

static int append_str_or_null(shoal_buf *out, const char *s)
{
    return s ? node_json_append_str(out, s) : shoal_buf_append_str(out, "null");
}

/* The "cluster" totals of the status document, and its closing. */
static int render_cluster(const node_status *s, shoal_buf *out)
{
    uint64_t by_state[4] = {0}, used = 0, capacity = 0, reporting = 0;
    static const char *const states[4] = {"alive", "suspect", "dead", "left"};
    for (size_t i = 0; i < s->n_members; i++) {
        const node_status_member *m = &s->members[i];
        size_t k = 0;
        while (k < 4 && (!m->state || strcmp(m->state, states[k]) != 0))
            k++;
        if (k == 4)
            continue;
        by_state[k]++;
        if (k > 1) /* dead or left: their cache is no longer the cluster's */
            continue;
        capacity += m->cache_capacity;
        if (m->cache_known) {
            used += m->cache_bytes;
            reporting++;
        }
    }
    return shoal_buf_appendf(out,
                             "],\"cluster\":{\"alive\":%" PRIu64 ",\"suspect\":%" PRIu64 ",\"dead\":%" PRIu64
                             ",\"left\":%" PRIu64 ",\"cache_bytes\":%" PRIu64 ",\"cache_capacity\":%" PRIu64
                             ",\"cache_reporting\":%" PRIu64 "}}",
                             by_state[0], by_state[1], by_state[2], by_state[3], used, capacity, reporting);
}

int node_status_render_json(const node_status *s, shoal_buf *out)
{
    if (shoal_buf_append_str(out, "{\"node_id\":") < 0 || append_str_or_null(out, s->node_id) < 0 ||
        shoal_buf_append_str(out, ",\"address\":") < 0 || append_str_or_null(out, s->address) < 0 ||
        shoal_buf_append_str(out, ",\"zone\":") < 0 || append_str_or_null(out, s->zone) < 0 ||
        shoal_buf_append_str(out, ",\"bucket\":") < 0 || append_str_or_null(out, s->bucket) < 0 ||
        shoal_buf_appendf(out, ",\"ring_version\":%" PRIu64 ",\"block_size\":%" PRIu64 ",\"uptime_seconds\":%" PRIu64
                          ",\"ready\":%s,\"waiting_for\":",
                          s->ring_version, s->block_size, s->uptime_seconds, s->ready ? "true" : "false") < 0 ||
        append_str_or_null(out, s->waiting_for) < 0 ||
        shoal_buf_appendf(out, ",\"joined\":%s,\"s3_checked\":%s,\"mounted\":%s,\"members\":[",
                          s->joined ? "true" : "false", s->s3_checked ? "true" : "false",
                          !s->has_mount ? "null" : s->mounted ? "true" : "false") < 0)
        return -1;
    for (size_t i = 0; i < s->n_members; i++) {
        const node_status_member *m = &s->members[i];
        if (shoal_buf_append_str(out, i ? ",{\"id\":" : "{\"id\":") < 0 || append_str_or_null(out, m->id) < 0 ||
            shoal_buf_append_str(out, ",\"address\":") < 0 || append_str_or_null(out, m->address) < 0 ||
            shoal_buf_append_str(out, ",\"zone\":") < 0 || append_str_or_null(out, m->zone) < 0 ||
            shoal_buf_append_str(out, ",\"state\":") < 0 || append_str_or_null(out, m->state) < 0 ||
            shoal_buf_appendf(out,
                              ",\"incarnation\":%" PRIu64 ",\"cache_bytes\":",
                              m->incarnation) < 0 ||
            (m->cache_known ? shoal_buf_appendf(out, "%" PRIu64, m->cache_bytes)
                            : shoal_buf_append_str(out, "null")) < 0 ||
            shoal_buf_appendf(out, ",\"cache_capacity\":%" PRIu64 ",\"serves\":%s}", m->cache_capacity,
                              m->serves ? "true" : "false") < 0)
            return -1;
    }
    return render_cluster(s, out);
}

/* ---- socket helpers ------------------------------------------------------------------------- */

static int send_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return shoal_error_set(SHOAL_ERR_CLOSED, "control client went away: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int sun_for(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path)
        return shoal_error_set(SHOAL_ERR_INVAL, "control socket path '%s' is too long", path);
    strcpy(sa->sun_path, path);
    return 0;
}

/* ---- server: replies ------------------------------------------------------------------------ */

enum reply_state { REPLY_NONE, REPLY_DONE, REPLY_BYTES, REPLY_PROGRESS };

struct node_control_reply {
    int fd;
    enum reply_state state;
    uint64_t remaining; /* REPLY_BYTES: bytes still owed */
    bool chunks;        /* the client asked for a chunked byte body ("fds":true) */
};

/* One chunk header of a chunked byte body (little-endian): kind, 0, offset, length. A DATA chunk
 * is followed by `length` bytes; an FD chunk carries one descriptor (SCM_RIGHTS) whose bytes
 * [offset, offset + length) the client copies itself. */
enum { CHUNK_DATA = 1, CHUNK_FD = 2, CHUNK_HEADER_LEN = 24 };

static void chunk_header(uint8_t h[CHUNK_HEADER_LEN], uint32_t kind, uint64_t off, uint64_t len)
{
    memset(h, 0, CHUNK_HEADER_LEN);
    shoal_store_le32(h, kind);
    shoal_store_le64(h + 8, off);
    shoal_store_le64(h + 16, len);
}

/* Sends an FD chunk header with `fd` attached; the kernel gives the client its own descriptor. */
static int send_fd_chunk(int sock, int fd, uint64_t off, uint64_t len)
{
    uint8_t h[CHUNK_HEADER_LEN];
    chunk_header(h, CHUNK_FD, off, len);
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = h, .iov_len = sizeof h};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    ssize_t n;
    do
        n = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return shoal_error_set(errno == EPIPE || errno == ECONNRESET ? SHOAL_ERR_CLOSED : SHOAL_ERR_IO,
                               "control reply: passing a block file: %s", strerror(errno));
    /* The descriptor went with the first byte; a partial send is finished the ordinary way. */
    return (size_t)n == sizeof h ? 0 : send_all(sock, h + n, sizeof h - (size_t)n);
}

static int reply_header(node_control_reply *r, const char *header, enum reply_state next)
{
    if (r->state != REPLY_NONE)
        return shoal_error_set(SHOAL_ERR_INVAL, "control reply already begun");
    r->state = next;
    return send_all(r->fd, header, strlen(header));
}

int node_control_reply_json(node_control_reply *r, const char *json)
{
    if (reply_header(r, "{\"ok\":true,\"body\":\"json\"}\n", REPLY_DONE) < 0)
        return -1;
    if (send_all(r->fd, json, strlen(json)) < 0)
        return -1;
    return send_all(r->fd, "\n", 1);
}

/* The header of a byte body; an object's size and ETag are named when etag is not NULL. */
static int bytes_begin(node_control_reply *r, uint64_t size, uint64_t object_size, const char *etag)
{
    shoal_buf h = {0};
    int rc = -1;
    if (shoal_buf_appendf(&h, "{\"ok\":true,\"body\":\"%s\",\"size\":%" PRIu64, r->chunks ? "chunks" : "bytes",
                          size) < 0 ||
        (etag && (shoal_buf_appendf(&h, ",\"object_size\":%" PRIu64 ",\"etag\":", object_size) < 0 ||
                  node_json_append_str(&h, etag) < 0)) ||
        shoal_buf_append_str(&h, "}\n") < 0)
        goto done;
    rc = reply_header(r, shoal_buf_str(&h), REPLY_BYTES);
    r->remaining = size;
done:
    shoal_buf_destroy(&h);
    return rc;
}

int node_control_reply_bytes_begin(node_control_reply *r, uint64_t size)
{
    return bytes_begin(r, size, 0, NULL);
}

int node_control_reply_object_begin(node_control_reply *r, uint64_t size, uint64_t object_size, const char *etag)
{
    return bytes_begin(r, size, object_size, etag);
}

static int reply_check_bytes(node_control_reply *r, size_t len)
{
    if (r->state != REPLY_BYTES)
        return shoal_error_set(SHOAL_ERR_INVAL, "control reply: bytes sent before node_control_reply_bytes_begin");
    if (len > r->remaining)
        return shoal_error_set(SHOAL_ERR_RANGE, "control reply: %zu bytes exceed the %" PRIu64 " announced", len,
                               r->remaining);
    return 0;
}

int node_control_reply_write(node_control_reply *r, const void *data, size_t len)
{
    if (reply_check_bytes(r, len) < 0)
        return -1;
    if (r->chunks && len > 0) {
        uint8_t h[CHUNK_HEADER_LEN];
        chunk_header(h, CHUNK_DATA, 0, len);
        if (send_all(r->fd, h, sizeof h) < 0)
            return -1;
    }
    if (send_all(r->fd, data, len) < 0)
        return -1;
    r->remaining -= len;
    return 0;
}

int node_control_reply_sendfile(node_control_reply *r, int fd, uint64_t off, size_t len)
{
    if (reply_check_bytes(r, len) < 0)
        return -1;
    if (r->chunks) {
        if (len > 0 && send_fd_chunk(r->fd, fd, off, len) < 0)
            return -1;
        r->remaining -= len;
        return 0;
    }
    off_t o = (off_t)off;
    size_t left = len;
    while (left) {
        ssize_t n = sendfile(r->fd, fd, &o, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return shoal_error_set(errno == EPIPE || errno == ECONNRESET ? SHOAL_ERR_CLOSED : SHOAL_ERR_IO,
                                   "control reply: sendfile: %s", strerror(errno));
        if (n == 0)
            return shoal_error_set(SHOAL_ERR_IO, "control reply: sendfile: file ended %zu bytes early", left);
        left -= (size_t)n;
    }
    r->remaining -= len;
    return 0;
}

static int progress_line(node_control_reply *r, const node_control_progress *p, const char *tail)
{
    shoal_buf b = {0};
    int rc = -1;
    if (r->state == REPLY_NONE && reply_header(r, "{\"ok\":true,\"body\":\"progress\"}\n", REPLY_PROGRESS) < 0)
        return -1;
    if (r->state != REPLY_PROGRESS)
        return shoal_error_set(SHOAL_ERR_INVAL, "control reply: progress after another body");
    if (shoal_buf_appendf(&b,
                          "{\"objects_done\":%" PRIu64 ",\"objects_total\":%" PRIu64 ",\"bytes_done\":%" PRIu64
                          ",\"bytes_total\":%" PRIu64 ",\"listed\":%s,\"blocks_done\":%" PRIu64
                          ",\"blocks_total\":%" PRIu64 ",\"cached\":%" PRIu64 ",\"fetched\":%" PRIu64
                          ",\"sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"failed\":%" PRIu64 "%s}\n",
                          p->objects_done, p->objects_total, p->bytes_done, p->bytes_total,
                          p->listed ? "true" : "false", p->blocks_done, p->blocks_total, p->cached, p->fetched,
                          p->sent, p->bytes_sent, p->failed, tail) < 0)
        goto fail;
    rc = send_all(r->fd, b.data, b.len);
fail:
    shoal_buf_destroy(&b);
    return rc;
}

int node_control_reply_progress(node_control_reply *r, const node_control_progress *p)
{
    return progress_line(r, p, "");
}

int node_control_reply_progress_done(node_control_reply *r, const node_control_progress *p)
{
    if (progress_line(r, p, ",\"done\":true") < 0)
        return -1;
    r->state = REPLY_DONE;
    return 0;
}

/* After a handler returned: finish whatever it left open. */
static void reply_finish(node_control_reply *r, int rc)
{
    shoal_buf b = {0};
    if (rc == 0 && r->state == REPLY_NONE) {
        send_all(r->fd, "{\"ok\":true,\"body\":\"none\"}\n", 26);
        return;
    }
    if (rc == 0 || r->state == REPLY_DONE || r->state == REPLY_BYTES)
        return; /* a short byte body is reported by the client, which knows the size */
    const char *msg = shoal_error_message()[0] ? shoal_error_message() : "the daemon failed without a message";
    /* The code as the header names it: the enum's name without "ERR_" ("S3_NO_SUCH_KEY"). */
    const char *code = shoal_error_name(shoal_error_code() ? shoal_error_code() : SHOAL_ERR_NODE) + 4;
    if (r->state == REPLY_NONE) {
        if (shoal_buf_append_str(&b, "{\"ok\":false,\"error\":") == 0 && node_json_append_str(&b, msg) == 0 &&
            shoal_buf_appendf(&b, ",\"code\":\"%s\"}\n", code) == 0)
            send_all(r->fd, b.data, b.len);
    } else {
        if (shoal_buf_append_str(&b, "{\"error\":") == 0 && node_json_append_str(&b, msg) == 0 &&
            shoal_buf_append_str(&b, "}\n") == 0)
            send_all(r->fd, b.data, b.len);
    }
    shoal_buf_destroy(&b);
}

/* ---- server: connections -------------------------------------------------------------------- */

#define CONTROL_MAX_CONNS 32
#define CONTROL_REQUEST_TIMEOUT_S 5

struct node_control_server {
    char *path;
    int listen_fd;
    int wake[2];
    pthread_t thread;
    node_control_handlers handlers;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    int conns[CONTROL_MAX_CONNS]; /* open connection fds, -1 when free */
    int n_conns;
};

typedef struct conn_job {
    node_control_server *s;
    int slot;
} conn_job;

/* Reads one request line. */
static int read_request(int fd, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    while (n < cap) {
        ssize_t got = recv(fd, buf + n, cap - n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return shoal_error_set(SHOAL_ERR_TIMEOUT, "reading the request: %s", strerror(errno));
        if (got == 0)
            return shoal_error_set(SHOAL_ERR_INVAL, "the request ended without a newline");
        char *nl = memchr(buf + n, '\n', (size_t)got);
        n += (size_t)got;
        if (nl) {
            *len = (size_t)(nl - buf);
            return 0;
        }
    }
    return shoal_error_set(SHOAL_ERR_INVAL, "request longer than %d bytes", NODE_CONTROL_MAX_REQUEST);
}

/* Optional members of a request: absent leaves *out alone; present with another type, or a number
 * out of [lo, hi], is an error naming the member. */
static int opt_u64(const node_json *req, const char *cmd, const char *name, uint64_t lo, uint64_t hi, uint64_t *out)
{
    const node_json *m = node_json_get(req, name);
    if (!m)
        return 0;
    if (m->type != NODE_JSON_NUMBER || !m->is_u64 || m->u64 < lo || m->u64 > hi)
        return shoal_error_set(SHOAL_ERR_INVAL, "%s: \"%s\" must be an integer from %" PRIu64 " to %" PRIu64, cmd,
                               name, lo, hi);
    *out = m->u64;
    return 0;
}

static int opt_str(const node_json *req, const char *cmd, const char *name, const char **out)
{
    const node_json *m = node_json_get(req, name);
    if (m && (m->type != NODE_JSON_STRING || !*m->str))
        return shoal_error_set(SHOAL_ERR_INVAL, "%s: \"%s\" must be a non-empty string", cmd, name);
    *out = m ? m->str : NULL;
    return 0;
}

static int dispatch(node_control_server *s, const node_json *req, node_control_reply *reply)
{
    node_control_request r = {
        .cmd = node_json_get_str(req, "cmd", NULL),
        .bucket = node_json_get_str(req, "bucket", NULL),
        .key = node_json_get_str(req, "key", NULL),
        .prefix = node_json_get_str(req, "prefix", NULL),
        .delimiter = node_json_get_str(req, "delimiter", NULL),
        .node = node_json_get_str(req, "node", NULL),
        .length = UINT64_MAX,
    };
    uint64_t max_keys = 0;
    node_control_handler_fn fn = NULL;
    if (!r.cmd)
        return shoal_error_set(SHOAL_ERR_INVAL, "request without \"cmd\"");
    if (!strcmp(r.cmd, "status"))
        fn = s->handlers.status;
    else if (!strcmp(r.cmd, "stats"))
        fn = s->handlers.stats;
    else if (!strcmp(r.cmd, "leave"))
        fn = s->handlers.leave;
    else if (!strcmp(r.cmd, "drain"))
        fn = s->handlers.drain;
    else if (!strcmp(r.cmd, "get") || !strcmp(r.cmd, "stat")) {
        bool get = !strcmp(r.cmd, "get");
        if (!r.bucket || !r.key || !*r.key)
            return shoal_error_set(SHOAL_ERR_INVAL, "%s needs \"bucket\" and a non-empty \"key\"", r.cmd);
        if (get && (opt_u64(req, "get", "offset", 0, UINT64_MAX, &r.offset) < 0 ||
                    opt_u64(req, "get", "length", 0, UINT64_MAX, &r.length) < 0 ||
                    opt_str(req, "get", "etag", &r.etag) < 0))
            return -1;
        fn = get ? s->handlers.get : s->handlers.stat;
    } else if (!strcmp(r.cmd, "preload")) {
        if (!r.bucket || !r.prefix)
            return shoal_error_set(SHOAL_ERR_INVAL, "preload needs \"bucket\" and \"prefix\"");
        fn = s->handlers.preload;
    } else if (!strcmp(r.cmd, "forget")) {
        if (!r.node || !*r.node)
            return shoal_error_set(SHOAL_ERR_INVAL, "forget needs a non-empty \"node\"");
        fn = s->handlers.forget;
    } else if (!strcmp(r.cmd, "list")) {
        if (!r.bucket || !r.prefix)
            return shoal_error_set(SHOAL_ERR_INVAL, "list needs \"bucket\" and \"prefix\"");
        if (opt_u64(req, "list", "max_keys", 1, 1000, &max_keys) < 0 || opt_str(req, "list", "token", &r.token) < 0)
            return -1;
        r.max_keys = (unsigned)max_keys;
        r.paged = r.max_keys || r.token;
        if (!r.delimiter)
            r.delimiter = "/";
        fn = s->handlers.list;
    } else {
        return shoal_error_set(SHOAL_ERR_INVAL, "unknown command '%s'", r.cmd);
    }
    if (!fn)
        return shoal_error_set(SHOAL_ERR_UNSUPPORTED, "command '%s' is not supported by this daemon", r.cmd);
    reply->chunks = !strcmp(r.cmd, "get") && node_json_get_bool(req, "fds", false);
    shoal_error_clear();
    return fn(s->ctx, &r, reply);
}

static void *conn_main(void *arg)
{
    conn_job job = *(conn_job *)arg;
    node_control_server *s = job.s;
    free(arg);
    int fd = s->conns[job.slot];
    char buf[NODE_CONTROL_MAX_REQUEST];
    size_t len = 0;
    node_control_reply reply = {.fd = fd, .state = REPLY_NONE};
    node_json *req = NULL;
    int rc = read_request(fd, buf, sizeof buf, &len);
    if (rc == 0) {
        req = node_json_parse(buf, len);
        rc = !req ? -1 : req->type != NODE_JSON_OBJECT ? shoal_error_set(SHOAL_ERR_INVAL, "request is not an object")
                                                        : dispatch(s, req, &reply);
    }
    reply_finish(&reply, rc);
    node_json_delete(req);
    pthread_mutex_lock(&s->mu);
    s->conns[job.slot] = -1;
    s->n_conns--;
    close(fd);
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void start_conn(node_control_server *s, int fd)
{
    struct timeval tv = {.tv_sec = CONTROL_REQUEST_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&s->mu);
    int slot = -1;
    for (int i = 0; i < CONTROL_MAX_CONNS && slot < 0; i++)
        if (s->conns[i] < 0)
            slot = i;
    conn_job *job = slot >= 0 ? malloc(sizeof *job) : NULL;
    bool started = false;
    if (job) {
        *job = (conn_job){s, slot};
        s->conns[slot] = fd;
        s->n_conns++;
        started = shoal_thread_start(NULL, "ctl-conn", conn_main, job) == 0;
        if (!started) {
            s->conns[slot] = -1;
            s->n_conns--;
            free(job);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!started) {
        static const char busy[] = "{\"ok\":false,\"error\":\"the daemon is busy with too many control requests\"}\n";
        send_all(fd, busy, sizeof busy - 1);
        close(fd);
    }
}

static void *accept_main(void *arg)
{
    node_control_server *s = arg;
    struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            LOG_ERROR("control", "poll_failed", "errno=%d", errno);
            break;
        }
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            start_conn(s, fd);
        } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors: the pending connection keeps the socket readable, so back off
             * (still waking for shutdown) instead of spinning. */
            LOG_WARN("control", "accept_failed", "errno=%d", errno);
            if (poll(&p[1], 1, 100) > 0)
                break;
        }
    }
    return NULL;
}

/* ---- server: lifecycle ---------------------------------------------------------------------- */

/* mkdir -p of path's parent, each directory made 0700. */
static int make_parent(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; ; p++) {
        if (*p && *p != '/')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return shoal_error_errno(errno, "control socket: mkdir '%s'", dir);
        *p = c;
        if (!c)
            break;
    }
    return 0;
}

/* A socket file already at `path`: refuse when a daemon answers on it, else remove it. */
static int clear_stale(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : shoal_error_errno(errno, "control socket: stat '%s'", path);
    if (!S_ISSOCK(st.st_mode))
        return shoal_error_set(SHOAL_ERR_INVAL, "control socket: '%s' exists and is not a socket", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return shoal_error_errno(errno, "control socket: socket");
    int live = connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0;
    close(fd);
    if (live)
        return shoal_error_set(SHOAL_ERR_INVAL, "control socket '%s' is in use by a running daemon", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return shoal_error_errno(errno, "control socket: removing stale '%s'", path);
    return 0;
}

/* Binds the listening socket at `path` with mode 0600: through a temporary name in the same
 * directory and a rename when that name fits in sun_path, else (a path within a few bytes of the
 * limit) directly followed by chmod, where the 0700 parent directory covers the short window. */
static int bind_private(int fd, const char *path)
{
    struct sockaddr_un sa, tmp;
    char tmp_path[sizeof sa.sun_path + 32];
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    snprintf(tmp_path, sizeof tmp_path, "%.*s.shoald-%ld", dir_len, path, (long)getpid());
    if (sun_for(path, &sa) < 0)
        return -1;
    if (strlen(tmp_path) >= sizeof tmp.sun_path) {
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            return shoal_error_errno(errno, "control socket: bind '%s'", path);
        if (chmod(path, 0600) < 0) {
            int e = errno;
            unlink(path);
            return shoal_error_errno(e, "control socket: chmod '%s'", path);
        }
        return 0;
    }
    sun_for(tmp_path, &tmp);
    unlink(tmp_path);
    if (bind(fd, (struct sockaddr *)&tmp, sizeof tmp) < 0)
        return shoal_error_errno(errno, "control socket: bind '%s'", tmp_path);
    if (chmod(tmp_path, 0600) < 0 || rename(tmp_path, path) < 0) {
        int e = errno;
        unlink(tmp_path);
        return shoal_error_errno(e, "control socket: placing '%s'", path);
    }
    return 0;
}

node_control_server *node_control_server_new(const char *path, const node_control_handlers *handlers, void *ctx)
{
    struct sockaddr_un sa;
    node_control_server *s = calloc(1, sizeof *s);
    if (!s) {
        shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for the control server");
        return NULL;
    }
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    s->handlers = *handlers;
    s->ctx = ctx;
    for (int i = 0; i < CONTROL_MAX_CONNS; i++)
        s->conns[i] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle, NULL);
    if (!(s->path = strdup(path))) {
        shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for the control server");
        goto fail;
    }
    if (sun_for(path, &sa) < 0 || make_parent(path) < 0 || clear_stale(path, &sa) < 0)
        goto fail;
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0) {
        shoal_error_errno(errno, "control socket: socket");
        goto fail;
    }
    if (bind_private(s->listen_fd, path) < 0)
        goto fail;
    if (listen(s->listen_fd, 64) < 0) {
        shoal_error_errno(errno, "control socket: listen '%s'", path);
        goto fail_unlink;
    }
    if (pipe2(s->wake, O_CLOEXEC) < 0) {
        shoal_error_errno(errno, "control socket: pipe");
        goto fail_unlink;
    }
    if (shoal_thread_start(&s->thread, "ctl-accept", accept_main, s) != 0) {
        shoal_error_wrap("control socket");
        goto fail_unlink;
    }
    return s;
fail_unlink:
    unlink(path);
fail:
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->idle);
    free(s->path);
    free(s);
    return NULL;
}

void node_control_server_delete(node_control_server *s)
{
    if (!s)
        return;
    if (write(s->wake[1], "x", 1) < 0)
        LOG_WARN("control", "wake_failed", "errno=%d", errno);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    unlink(s->path);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < CONTROL_MAX_CONNS; i++)
        if (s->conns[i] >= 0)
            shutdown(s->conns[i], SHUT_RDWR);
    while (s->n_conns > 0)
        pthread_cond_wait(&s->idle, &s->mu);
    pthread_mutex_unlock(&s->mu);
    close(s->wake[0]);
    close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->idle);
    free(s->path);
    free(s);
}

/* ---- client --------------------------------------------------------------------------------- */

#define CLIENT_BUF (256 * 1024)
#define CLIENT_MAX_FDS 8 /* descriptors received and not consumed yet; one per recvmsg arrives */

typedef struct client {
    const char *path;
    int fd;
    char *buf; /* received bytes not consumed yet: buf[pos..len) */
    size_t pos, len;
    int fds[CLIENT_MAX_FDS]; /* descriptors of FD chunks, in the order they came */
    size_t n_fds;
    bool fds_lost;           /* more came than fit, or the kernel cut the control data */
} client;

static void client_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    for (size_t i = 0; i < c->n_fds; i++)
        close(c->fds[i]);
    free(c->buf);
}

/* Keeps the descriptors that came with a recvmsg (closing what does not fit). */
static void client_take_fds(client *c, struct msghdr *m)
{
    if (m->msg_flags & MSG_CTRUNC)
        c->fds_lost = true;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
            if (c->n_fds < CLIENT_MAX_FDS) {
                c->fds[c->n_fds++] = fd;
            } else {
                close(fd);
                c->fds_lost = true;
            }
        }
    }
}

/* Receives more bytes into the buffer, and any descriptor sent with them. */
static int client_fill(client *c)
{
    if (c->pos == c->len)
        c->pos = c->len = 0;
    for (;;) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(4 * sizeof(int))];
        } ctl;
        struct iovec iov = {.iov_base = c->buf + c->len, .iov_len = CLIENT_BUF - c->len};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
        ssize_t n = recvmsg(c->fd, &m, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return shoal_error_errno(errno, "reading from shoald at %s", c->path);
        client_take_fds(c, &m);
        c->len += (size_t)n;
        return (int)(n > 0);
    }
}

/* Reads one line (without its newline) into a heap string. */
static int client_line(client *c, char **line)
{
    for (;;) {
        char *nl = memchr(c->buf + c->pos, '\n', c->len - c->pos);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->pos));
            *line = strndup(c->buf + c->pos, n);
            c->pos += n + 1;
            return *line ? 0 : shoal_error_set(SHOAL_ERR_NOMEM, "out of memory");
        }
        if (c->pos > 0) {
            memmove(c->buf, c->buf + c->pos, c->len - c->pos);
            c->len -= c->pos;
            c->pos = 0;
        }
        if (c->len == CLIENT_BUF)
            return shoal_error_set(SHOAL_ERR_NODE, "shoald at %s sent an over-long line", c->path);
        int rc = client_fill(c);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return shoal_error_set(SHOAL_ERR_NODE, "shoald at %s closed the connection mid-answer", c->path);
    }
}

static node_json *client_json_line(client *c)
{
    char *line = NULL;
    if (client_line(c, &line) < 0)
        return NULL;
    node_json *j = node_json_parse(line, strlen(line));
    free(line);
    if (!j)
        shoal_error_wrap("answer of shoald at %s", c->path);
    return j;
}

/* Connects, sends the request and reads the header; returns the header's "body" kind. */
static node_json *client_request(client *c, const char *path, const shoal_buf *request)
{
    struct sockaddr_un sa;
    memset(c, 0, sizeof *c);
    c->path = path;
    c->fd = -1;
    if (sun_for(path, &sa) < 0)
        return NULL;
    if (!(c->buf = malloc(CLIENT_BUF))) {
        shoal_error_set(SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        shoal_error_errno(errno, "socket");
        return NULL;
    }
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        shoal_error_set(SHOAL_ERR_IO, "cannot reach shoald at %s: %s (is shoald running? --control sets the path)",
                        path, strerror(errno));
        return NULL;
    }
    if (send_all(c->fd, request->data, request->len) < 0) {
        shoal_error_set(SHOAL_ERR_IO, "shoald at %s closed the connection before the request was sent", path);
        return NULL;
    }
    node_json *h = client_json_line(c);
    if (!h)
        return NULL;
    if (!node_json_get_bool(h, "ok", false)) {
        shoal_error_set(SHOAL_ERR_NODE, "%s", node_json_get_str(h, "error", "shoald answered with an error"));
        node_json_delete(h);
        return NULL;
    }
    return h;
}

/* Appends {"cmd":cmd[,"bucket":..][,name:value][tail]}\n; tail is raw JSON members (",\"x\":true"). */
static int build_request(shoal_buf *b, const char *cmd, const char *bucket, const char *name, const char *value,
                         const char *tail)
{
    if (shoal_buf_append_str(b, "{\"cmd\":") < 0 || node_json_append_str(b, cmd) < 0)
        return -1;
    if (bucket && (shoal_buf_append_str(b, ",\"bucket\":") < 0 || node_json_append_str(b, bucket) < 0))
        return -1;
    if (name && (shoal_buf_appendf(b, ",\"%s\":", name) < 0 || node_json_append_str(b, value) < 0))
        return -1;
    if (tail && shoal_buf_append_str(b, tail) < 0)
        return -1;
    if (shoal_buf_append_str(b, "}\n") < 0)
        return -1;
    if (b->len > NODE_CONTROL_MAX_REQUEST)
        return shoal_error_set(SHOAL_ERR_INVAL, "request too long (%zu bytes, at most %d)", b->len,
                               NODE_CONTROL_MAX_REQUEST);
    return 0;
}

/* Sends a built request and appends its JSON body (nothing for a "none" body) to *body. */
static int call_json(const char *path, const char *cmd, const shoal_buf *req, shoal_buf *body)
{
    client c = {.fd = -1};
    node_json *h = NULL;
    char *line = NULL;
    int rc = -1;
    if (!(h = client_request(&c, path, req)))
        goto fail;
    const char *kind = node_json_get_str(h, "body", "");
    if (!strcmp(kind, "none")) {
        rc = 0;
        goto fail;
    }
    if (strcmp(kind, "json") != 0) {
        shoal_error_set(SHOAL_ERR_NODE, "shoald at %s answered '%s' with a '%s' body", path, cmd, kind);
        goto fail;
    }
    if (client_line(&c, &line) < 0)
        goto fail;
    rc = shoal_buf_append_str(body, line);
fail:
    free(line);
    node_json_delete(h);
    client_close(&c);
    return rc;
}

int node_control_call(const char *path, const char *cmd, shoal_buf *body)
{
    shoal_buf req = {0};
    int rc = build_request(&req, cmd, NULL, NULL, NULL, NULL) < 0 ? -1 : call_json(path, cmd, &req, body);
    shoal_buf_destroy(&req);
    return rc;
}

static int write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return shoal_error_errno(errno, "writing the object");
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes n bytes waiting in the relay pipe to out_fd: by splice, or by read and write for an
 * out_fd that does not take splice (a terminal, some file systems). */
static int drain_relay(int relay_r, int out_fd, size_t n, char *buf)
{
    while (n) {
        ssize_t k = splice(relay_r, NULL, out_fd, NULL, n, SPLICE_F_MOVE | SPLICE_F_MORE);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EINVAL) {
            k = read(relay_r, buf, n < CLIENT_BUF ? n : CLIENT_BUF);
            if (k > 0 && write_all(out_fd, buf, (size_t)k) < 0)
                return -1;
        }
        if (k <= 0)
            return shoal_error_errno(errno, "writing the object");
        n -= (size_t)k;
    }
    return 0;
}

/* Copies the rest of a byte body to out_fd: first what the client buffer already holds, then
 * with splice(2) (socket -> out_fd when it is a pipe, else socket -> our relay pipe -> out_fd), so
 * the object's bytes never pass through user space; plain recv and write only when the socket
 * itself refuses splice. */
static int copy_body(client *c, int out_fd, uint64_t size, const char *bucket, const char *key)
{
    struct stat st;
    int relay[2] = {-1, -1}, rc = -1;
    uint64_t left = size;
    bool use_splice = true;
    bool out_is_pipe = fstat(out_fd, &st) == 0 && S_ISFIFO(st.st_mode);
    size_t n = c->len - c->pos < left ? c->len - c->pos : (size_t)left;
    if (write_all(out_fd, c->buf + c->pos, n) < 0)
        return -1;
    c->pos += n;
    left -= n;
    if (!out_is_pipe && pipe2(relay, O_CLOEXEC) < 0)
        return shoal_error_errno(errno, "pipe");
    if (!out_is_pipe)
        fcntl(relay[1], F_SETPIPE_SZ, 1 << 20); /* fewer, larger moves; the default size works too */
    while (left) {
        size_t want = left > (1u << 20) ? (1u << 20) : (size_t)left;
        ssize_t got;
        if (use_splice) {
            got = splice(c->fd, NULL, out_is_pipe ? out_fd : relay[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_MORE);
            if (got < 0 && errno == EINVAL) {
                use_splice = false; /* nothing moved: copy from here on */
                continue;
            }
            if (got > 0 && !out_is_pipe && drain_relay(relay[0], out_fd, (size_t)got, c->buf) < 0)
                goto fail;
        } else {
            got = recv(c->fd, c->buf, want < CLIENT_BUF ? want : CLIENT_BUF, 0);
            if (got > 0 && write_all(out_fd, c->buf, (size_t)got) < 0)
                goto fail;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            shoal_error_errno(errno, "s3://%s/%s: receiving the object", bucket, key);
            goto fail;
        }
        if (got == 0) {
            shoal_error_set(SHOAL_ERR_NODE, "s3://%s/%s: the daemon's stream ended after %" PRIu64 " of %" PRIu64
                            " bytes (see shoald's log)", bucket, key, size - left, size);
            goto fail;
        }
        left -= (uint64_t)got;
    }
    rc = 0;
fail:
    if (relay[0] >= 0) {
        close(relay[0]);
        close(relay[1]);
    }
    return rc;
}

/* How bytes move from a passed block file to out_fd; each step down is taken once, when the
 * kernel refuses the one above for this pair of files. */
enum fd_copy_mode { COPY_RANGE, COPY_SENDFILE, COPY_READ_WRITE };

/* Copies [off, off + len) of in_fd to out_fd at its current position: copy_file_range(2) between
 * regular files (the kernel copies, or shares extents), else sendfile(2) (pipes, sockets,
 * /dev/null), else pread and write. */
static int copy_from_fd(int in_fd, uint64_t off, uint64_t len, int out_fd, enum fd_copy_mode *mode, char *buf)
{
    off_t o = (off_t)off;
    while (len) {
        size_t want = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t n;
        if (*mode == COPY_RANGE) {
            n = copy_file_range(in_fd, &o, out_fd, NULL, want, 0);
            if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                          errno == EBADF)) {
                *mode = COPY_SENDFILE;
                continue;
            }
        } else if (*mode == COPY_SENDFILE) {
            n = sendfile(out_fd, in_fd, &o, want);
            if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
                *mode = COPY_READ_WRITE;
                continue;
            }
        } else {
            n = pread(in_fd, buf, want < CLIENT_BUF ? want : CLIENT_BUF, o);
            if (n > 0 && write_all(out_fd, buf, (size_t)n) < 0)
                return -1;
            if (n > 0)
                o += n;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return shoal_error_errno(errno, "writing the object");
        if (n == 0)
            return shoal_error_set(SHOAL_ERR_NODE, "a block file passed by shoald ended %" PRIu64 " bytes early",
                                   len);
        len -= (uint64_t)n;
    }
    return 0;
}

/* Reads a chunked byte body of `size` bytes (header, then DATA bytes or an FD to copy from). */
static int copy_chunks(client *c, int out_fd, uint64_t size, const char *bucket, const char *key)
{
    enum fd_copy_mode mode = COPY_RANGE;
    uint64_t left = size;
    char *scratch = malloc(CLIENT_BUF); /* for pread and write, when the kernel copies refuse */
    int rc = -1;
    if (scratch == NULL)
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory");
    while (left) {
        while (c->len - c->pos < CHUNK_HEADER_LEN) {
            if (c->pos > 0) {
                memmove(c->buf, c->buf + c->pos, c->len - c->pos);
                c->len -= c->pos;
                c->pos = 0;
            }
            int got = client_fill(c);
            if (got < 0)
                goto done;
            if (got == 0) {
                shoal_error_set(SHOAL_ERR_NODE, "s3://%s/%s: the daemon's stream ended after %" PRIu64 " of %" PRIu64
                                " bytes (see shoald's log)", bucket, key, size - left, size);
                goto done;
            }
        }
        const uint8_t *h = (const uint8_t *)c->buf + c->pos;
        uint64_t kind = shoal_load_le32(h), off = shoal_load_le64(h + 8), len = shoal_load_le64(h + 16);
        c->pos += CHUNK_HEADER_LEN;
        if ((kind != CHUNK_DATA && kind != CHUNK_FD) || len == 0 || len > left) {
            shoal_error_set(SHOAL_ERR_NODE, "s3://%s/%s: shoald sent a bad chunk (kind %" PRIu64 ", %" PRIu64
                            " bytes, %" PRIu64 " left)", bucket, key, kind, len, left);
            goto done;
        }
        if (kind == CHUNK_DATA) {
            if (copy_body(c, out_fd, len, bucket, key) < 0)
                goto done;
        } else {
            if (c->n_fds == 0 || c->fds_lost) {
                shoal_error_set(SHOAL_ERR_NODE, "s3://%s/%s: a block file shoald passed did not arrive", bucket, key);
                goto done;
            }
            int fd = c->fds[0];
            memmove(c->fds, c->fds + 1, --c->n_fds * sizeof c->fds[0]);
            int r = copy_from_fd(fd, off, len, out_fd, &mode, scratch);
            close(fd);
            if (r < 0)
                goto done;
        }
        left -= len;
    }
    rc = 0;
done:
    free(scratch);
    return rc;
}

int node_control_get(const char *path, const char *bucket, const char *key, int out_fd, uint64_t *size)
{
    return node_control_get_range(path, bucket, key, 0, UINT64_MAX, out_fd, size);
}

int node_control_get_range(const char *path, const char *bucket, const char *key, uint64_t offset, uint64_t length,
                           int out_fd, uint64_t *size)
{
    char tail[96] = ",\"fds\":true";
    shoal_buf req = {0};
    client c = {.fd = -1};
    node_json *h = NULL;
    int rc = -1;
    if (offset || length != UINT64_MAX)
        snprintf(tail, sizeof tail, ",\"offset\":%" PRIu64 ",\"length\":%" PRIu64 ",\"fds\":true", offset, length);
    if (build_request(&req, "get", bucket, "key", key, tail) < 0 || !(h = client_request(&c, path, &req)))
        goto fail;
    const node_json *sz = node_json_get(h, "size");
    const char *kind = node_json_get_str(h, "body", "");
    bool chunks = !strcmp(kind, "chunks");
    if ((!chunks && strcmp(kind, "bytes") != 0) || !sz || !sz->is_u64) {
        shoal_error_set(SHOAL_ERR_NODE, "shoald at %s answered get without a sized byte body", path);
        goto fail;
    }
    if ((chunks ? copy_chunks(&c, out_fd, sz->u64, bucket, key) : copy_body(&c, out_fd, sz->u64, bucket, key)) < 0)
        goto fail;
    if (size)
        *size = sz->u64;
    rc = 0;
fail:
    node_json_delete(h);
    client_close(&c);
    shoal_buf_destroy(&req);
    return rc;
}

int node_control_forget(const char *path, const char *node)
{
    shoal_buf req = {0}, body = {0};
    int rc = build_request(&req, "forget", NULL, "node", node, NULL) < 0 ? -1 : call_json(path, "forget", &req, &body);
    shoal_buf_destroy(&req);
    shoal_buf_destroy(&body);
    return rc;
}

int node_control_list(const char *path, const char *bucket, const char *prefix, const char *delimiter,
                      shoal_buf *body)
{
    shoal_buf req = {0}, tail = {0};
    int rc = -1;
    if (shoal_buf_append_str(&tail, ",\"delimiter\":") == 0 && node_json_append_str(&tail, delimiter) == 0 &&
        build_request(&req, "list", bucket, "prefix", prefix, shoal_buf_str(&tail)) == 0)
        rc = call_json(path, "list", &req, body);
    shoal_buf_destroy(&req);
    shoal_buf_destroy(&tail);
    return rc;
}

/* Sends a built request whose answer is a progress body and reads it to its end, calling fn on each
 * line. 0 when the last line says done. */
static int progress_call(const char *path, const char *cmd, const shoal_buf *req, node_control_progress_fn fn,
                         void *ud)
{
    client c = {.fd = -1};
    node_json *h = NULL, *line = NULL;
    int rc = -1;
    if (!(h = client_request(&c, path, req)))
        goto fail;
    if (strcmp(node_json_get_str(h, "body", ""), "progress") != 0) {
        shoal_error_set(SHOAL_ERR_NODE, "shoald at %s answered %s without progress", path, cmd);
        goto fail;
    }
    for (;;) {
        if (!(line = client_json_line(&c)))
            goto fail;
        const char *err = node_json_get_str(line, "error", NULL);
        if (err) {
            shoal_error_set(SHOAL_ERR_NODE, "%s", err);
            goto fail;
        }
        node_control_progress p = {
            .objects_done = node_json_get_u64(line, "objects_done", 0),
            .objects_total = node_json_get_u64(line, "objects_total", 0),
            .bytes_done = node_json_get_u64(line, "bytes_done", 0),
            .bytes_total = node_json_get_u64(line, "bytes_total", 0),
            .listed = node_json_get_bool(line, "listed", false),
            .blocks_done = node_json_get_u64(line, "blocks_done", 0),
            .blocks_total = node_json_get_u64(line, "blocks_total", 0),
            .cached = node_json_get_u64(line, "cached", 0),
            .fetched = node_json_get_u64(line, "fetched", 0),
            .sent = node_json_get_u64(line, "sent", 0),
            .bytes_sent = node_json_get_u64(line, "bytes_sent", 0),
            .failed = node_json_get_u64(line, "failed", 0),
        };
        if (fn)
            fn(ud, &p);
        bool done = node_json_get_bool(line, "done", false);
        node_json_delete(line);
        line = NULL;
        if (done)
            break;
    }
    rc = 0;
fail:
    node_json_delete(line);
    node_json_delete(h);
    client_close(&c);
    return rc;
}

int node_control_preload(const char *path, const char *bucket, const char *prefix, node_control_progress_fn fn,
                         void *ud)
{
    shoal_buf req = {0};
    int rc = build_request(&req, "preload", bucket, "prefix", prefix, NULL) < 0
                 ? -1
                 : progress_call(path, "preload", &req, fn, ud);
    shoal_buf_destroy(&req);
    return rc;
}

int node_control_drain(const char *path, node_control_progress_fn fn, void *ud)
{
    shoal_buf req = {0};
    int rc = build_request(&req, "drain", NULL, NULL, NULL, NULL) < 0 ? -1 : progress_call(path, "drain", &req, fn, ud);
    shoal_buf_destroy(&req);
    return rc;
}
