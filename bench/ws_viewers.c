/*
 * Websocket viewers in C, for sizes where a Python client would be the bottleneck.
 *
 *     cc -O2 -o ws_viewers bench/ws_viewers.c
 *     ws_viewers HOST PORT PATH COUNT SECONDS END_MARK [IN_FLIGHT]
 *
 * Opens COUNT websockets to ws://HOST:PORT/PATH (at most IN_FLIGHT handshakes at once,
 * 64 unless given), prints {"type":"connected",...} once each socket is connected (has
 * its first message, the snapshot), failed (no websocket: the TCP connect or the HTTP
 * upgrade failed) or closed (the server closed the websocket before its first message,
 * as a refusal at the door does), or 300 s pass. Every close of a websocket, then or
 * later, is counted by its close code (1005 for a close frame without one, 1006 for no
 * close frame at all) and by its reason's machine code (see reason_code), in "closes"
 * and "reasons" of that line and of each report.
 * Then a phase: reads until every open socket has seen a text containing END_MARK, or
 * SECONDS pass, and prints {"type":"report",...}: messages, latency p50/p99/max in ms
 * (receipt time minus the message's "ts", one clock on this machine), the latency
 * histogram (0.1 ms buckets, as bench/clients.py keeps it) and how many saw the end.
 * A SIGUSR1, sent when the measured events begin, starts a phase afresh (counts, the end
 * seen and the SECONDS); one within SECONDS after a report starts another phase and
 * report, so that the same sockets can be measured more than once; else the program ends.
 * Answers pings with pongs and a close with a close; ignores everything else. Loopback
 * only, bounded in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKET_S 0.0001 /* latency buckets of 0.1 ms, as bench/clients.py */
#define BUCKETS 600000  /* up to 60 s */
#define NO_CODE 1005    /* a close frame without a code (RFC 6455, 7.4.1) */
#define NO_CLOSE 1006   /* the socket ended without a close frame */
#define REASON_MAX 123  /* a close frame's payload is at most 125 bytes, 2 of them the code */

enum state { IDLE, CONNECTING, HANDSHAKE, OPEN, CLOSED };

struct conn {
    int fd;
    enum state state;
    char *buf;
    size_t len, cap;
    int snapshot, saw_end;
};

/* How many closes had each key (a close code, a reason's machine code). */
struct tally {
    struct {
        char key[REASON_MAX + 1];
        unsigned n;
    } *entries;
    size_t used, cap;
};

static struct conn *conns;
static int count, in_flight_max = 64, epfd, connected, failed, closed_count, in_flight,
           next_to_open;
static uint32_t *histogram;
static uint64_t messages;
static double first_at, last_at;
static const char *end_mark;
static struct sockaddr_in address;
static char request[512];
static struct tally closes, reasons;
static double phase_seconds, deadline; /* a loop's end, moved on by each SIGUSR1 */
static int restarts, restarts_at_report;
static volatile sig_atomic_t restart_requested;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void request_restart(int signum) {
    (void)signum;
    restart_requested = 1;
}

/* SIGUSR1: a phase from now on (what arrived before it is not what is measured). */
static void restart_counts(void) {
    restart_requested = 0;
    memset(histogram, 0, BUCKETS * sizeof *histogram);
    messages = 0;
    first_at = last_at = 0;
    for (int i = 0; i < count; i++)
        conns[i].saw_end = 0;
    deadline = now() + phase_seconds;
    restarts++;
}

static void tally_add(struct tally *t, const char *key) {
    for (size_t i = 0; i < t->used; i++) {
        if (strcmp(t->entries[i].key, key) == 0) {
            t->entries[i].n++;
            return;
        }
    }
    if (t->used == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->entries = realloc(t->entries, t->cap * sizeof *t->entries);
    }
    snprintf(t->entries[t->used].key, sizeof t->entries[t->used].key, "%s", key);
    t->entries[t->used++].n = 1;
}

/* A JSON string's body, escaped (a reason's code is the server's text). */
static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

/* ,"NAME":{"key":n,...} */
static void print_tally(const char *name, const struct tally *t) {
    printf(",\"%s\":{", name);
    for (size_t i = 0; i < t->used; i++) {
        if (i)
            putchar(',');
        print_json_string(t->entries[i].key);
        printf(":%u", t->entries[i].n);
    }
    putchar('}');
}

static const char *skip_space(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static void append(char *out, size_t *n, size_t size, unsigned char byte) {
    if (*n + 1 < size)
        out[(*n)++] = (char)byte;
}

/* A JSON string at p (at its opening quote), decoded into out (NUL-terminated, cut at
 * size); the position after its closing quote, or NULL if it is not a valid string. */
static const char *json_string(const char *p, const char *end, char *out, size_t size) {
    static const char escapes[] = "\"\\/bfnrt", escaped[] = "\"\\/\b\f\n\r\t";
    size_t n = 0;
    if (p >= end || *p++ != '"')
        return NULL;
    while (p < end && *p != '"') {
        unsigned char ch = (unsigned char)*p++;
        const char *plain;
        if (ch < 0x20 || (ch == '\\' && p >= end))
            return NULL;
        if (ch != '\\') {
            append(out, &n, size, ch); /* UTF-8 as it came */
        } else if (*p && (plain = strchr(escapes, *p))) {
            append(out, &n, size, escaped[plain - escapes]);
            p++;
        } else if (*p == 'u' && end - p >= 5) {
            /* \uXXXX as UTF-8 (json.dumps writes any non-ASCII character so) */
            char hex[5] = {p[1], p[2], p[3], p[4], 0};
            if (strspn(hex, "0123456789abcdefABCDEF") != 4)
                return NULL;
            unsigned long cp = strtoul(hex, NULL, 16);
            p += 5;
            if (cp < 0x80) {
                append(out, &n, size, cp);
            } else if (cp < 0x800) {
                append(out, &n, size, 0xC0 | (cp >> 6));
                append(out, &n, size, 0x80 | (cp & 0x3F));
            } else {
                append(out, &n, size, 0xE0 | (cp >> 12));
                append(out, &n, size, 0x80 | ((cp >> 6) & 0x3F));
                append(out, &n, size, 0x80 | (cp & 0x3F));
            }
        } else {
            return NULL;
        }
    }
    if (p >= end)
        return NULL;
    out[n] = '\0';
    return p + 1;
}

/* Past one JSON value other than a string at p: a number or a literal (up to the next
 * comma or brace), or an object or array (to its matching bracket, strings skipped). */
static const char *skip_value(const char *p, const char *end) {
    char ignored[REASON_MAX + 1];
    if (p < end && (*p == '{' || *p == '[')) {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = json_string(p, end, ignored, sizeof ignored);
                if (!p)
                    return NULL;
                continue;
            }
            depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']');
            p++;
            if (depth == 0)
                return p;
        }
        return NULL;
    }
    const char *start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ' ' && *p != '\n' && *p != '\t' &&
           *p != '\r')
        p++;
    return p > start ? p : NULL;
}

/* A refusal's machine code: the reason is a JSON object whose "code" is a string, as
 * _reason_code in bench/clients.py reads it; "" for any other reason (not an object,
 * no "code", or not a string). The last "code" counts, as with Python's json.loads. */
static void reason_code(const char *reason, size_t n, char *out, size_t size) {
    const char *p = skip_space(reason, reason + n), *end = reason + n;
    char key[REASON_MAX + 1], value[REASON_MAX + 1];
    out[0] = '\0';
    value[0] = '\0';
    int found = 0;
    if (p >= end || *p++ != '{')
        return;
    p = skip_space(p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            p = json_string(skip_space(p, end), end, key, sizeof key);
            if (!p)
                return;
            p = skip_space(p, end);
            if (p >= end || *p++ != ':')
                return;
            p = skip_space(p, end);
            if (p < end && *p == '"') {
                char text[REASON_MAX + 1];
                p = json_string(p, end, text, sizeof text);
                if (!p)
                    return;
                if (strcmp(key, "code") == 0) {
                    found = 1;
                    strcpy(value, text);
                }
            } else {
                p = skip_value(p, end);
                if (!p)
                    return;
                if (strcmp(key, "code") == 0)
                    found = 0; /* a code that is not a string */
            }
            p = skip_space(p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return;
        }
    }
    if (found && skip_space(p, end) == end)
        snprintf(out, size, "%s", value);
}

/* A socket ends. Before the upgrade's answer it failed; a websocket that ends is counted
 * by the close CODE and the machine code of its REASON (N bytes), and as closed when it
 * had not yet had its first message (those that had it were connected). */
static void close_conn(struct conn *c, int code, const char *reason, size_t n) {
    if (c->state == CLOSED)
        return;
    if (c->state == CONNECTING || c->state == HANDSHAKE) {
        failed++;
        in_flight--;
    } else if (c->state == OPEN) {
        char key[REASON_MAX + 1];
        closed_count += !c->snapshot;
        snprintf(key, sizeof key, "%d", code);
        tally_add(&closes, key);
        reason_code(reason, n, key, sizeof key);
        tally_add(&reasons, key);
    }
    c->state = CLOSED;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf); /* thousands of refused sockets need none */
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* Gone without a close frame (a reset, an end of file, a failed write). */
static void lose_conn(struct conn *c) {
    close_conn(c, NO_CLOSE, "", 0);
}

static void open_next(void) {
    while (in_flight < in_flight_max && next_to_open < count) {
        struct conn *c = &conns[next_to_open++];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            failed++;
            c->state = CLOSED;
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->state = CONNECTING;
        in_flight++;
        if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0 &&
            errno != EINPROGRESS) {
            lose_conn(c);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    }
}

/* A control frame (pong, close) with up to 125 bytes of payload. */
static void send_control(struct conn *c, int opcode, const unsigned char *payload, size_t n) {
    unsigned char frame[2 + 4 + 125];
    if (n > 125)
        n = 125;
    frame[0] = 0x80 | opcode; /* FIN */
    frame[1] = 0x80 | (unsigned char)n; /* masked, as a client must */
    memset(frame + 2, 0, 4); /* a zero mask: the payload goes as it is */
    memcpy(frame + 6, payload, n);
    if (write(c->fd, frame, 6 + n) < 0) {
        /* a full or closed socket: the server's keepalive or close timeout decides */
    }
}

static void on_text(struct conn *c, const char *text, size_t n) {
    double at = now();
    if (!c->snapshot) {
        c->snapshot = 1; /* the first message is the stream's state */
        connected++;
        return;
    }
    char saved = ((char *)text)[n];
    ((char *)text)[n] = '\0';
    messages++;
    if (first_at == 0)
        first_at = at;
    last_at = at;
    const char *ts = strstr(text, "\"ts\":");
    if (ts) {
        double sent = strtod(ts + 5, NULL);
        long bucket = (long)((at - sent) / BUCKET_S);
        if (bucket < 0)
            bucket = 0;
        if (bucket >= BUCKETS)
            bucket = BUCKETS - 1;
        histogram[bucket]++;
    }
    if (!c->saw_end && strstr(text, end_mark))
        c->saw_end = 1;
    ((char *)text)[n] = saved;
}

/* Frames from the server: unmasked, each message in one frame (FIN set). */
static void read_frames(struct conn *c) {
    size_t at = 0;
    while (c->len - at >= 2) {
        unsigned char *p = (unsigned char *)c->buf + at;
        int opcode = p[0] & 0x0F;
        uint64_t n = p[1] & 0x7F;
        size_t head = 2;
        if (n == 126) {
            if (c->len - at < 4)
                break;
            n = ((uint64_t)p[2] << 8) | p[3];
            head = 4;
        } else if (n == 127) {
            if (c->len - at < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = (n << 8) | p[2 + i];
            head = 10;
        }
        if (c->len - at < head + n)
            break;
        const char *payload = (const char *)p + head;
        if (opcode == 0x1) {
            on_text(c, payload, n);
        } else if (opcode == 0x9) {
            send_control(c, 0xA, (const unsigned char *)payload, n);
        } else if (opcode == 0x8) {
            /* Its code echoed, as RFC 6455 asks and a browser does, so that the
             * server's closing handshake ends at once. */
            send_control(c, 0x8, (const unsigned char *)payload, n < 2 ? n : 2);
            if (n < 2)
                close_conn(c, NO_CODE, "", 0);
            else
                close_conn(c, (p[head] << 8) | p[head + 1], payload + 2, n - 2);
            return;
        }
        at += head + n;
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
}

static void on_readable(struct conn *c) {
    int ended = 0; /* an end of file or an error, after what came before it */
    for (;;) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
        if (got <= 0) {
            ended = got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
            break;
        }
        c->len += got;
    }
    if (c->state == HANDSHAKE) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end && strncmp(c->buf, "HTTP/1.1 101", 12) != 0) {
            lose_conn(c);
            return;
        }
        if (end) {
            size_t rest = c->len - (end + 4 - c->buf);
            memmove(c->buf, end + 4, rest);
            c->len = rest;
            c->state = OPEN;
            in_flight--;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    /* A refusal often comes as the upgrade's answer, its close frame and the end of the
     * stream in one read: the frames are read before the end counts. */
    if (c->state == OPEN)
        read_frames(c);
    if (ended) {
        lose_conn(c);
        return;
    }
    if (c->state == OPEN && c->cap > 262144 && c->len < 4096) {
        c->cap = 0; /* give back a buffer a burst grew */
        free(c->buf);
        c->buf = NULL;
        c->len = 0;
    }
}

static double percentile(double q) {
    uint64_t total = 0;
    for (long i = 0; i < BUCKETS; i++)
        total += histogram[i];
    if (!total)
        return -1;
    uint64_t rank = (uint64_t)(q * total), seen = 0;
    if (rank >= total)
        rank = total - 1;
    for (long i = 0; i < BUCKETS; i++) {
        seen += histogram[i];
        if (seen > rank)
            return i * BUCKET_S * 1000;
    }
    return -1;
}

static double max_latency(void) {
    for (long i = BUCKETS - 1; i >= 0; i--)
        if (histogram[i])
            return i * BUCKET_S * 1000;
    return -1;
}

static int open_count(void) {
    int n = 0;
    for (int i = 0; i < count; i++)
        n += conns[i].state == OPEN;
    return n;
}

static int all_saw_end(void) {
    for (int i = 0; i < count; i++)
        if (conns[i].state == OPEN && !conns[i].saw_end)
            return 0;
    return 1;
}

static void loop_until(int (*done)(void)) {
    struct epoll_event events[256];
    while (now() < deadline && !done()) {
        if (restart_requested)
            restart_counts();
        int n = epoll_wait(epfd, events, 256, 50);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            uint32_t what = events[i].events;
            if (c->state == CONNECTING && (what & (EPOLLERR | EPOLLHUP))) {
                lose_conn(c); /* refused or unreachable */
                continue;
            }
            if (c->state == CONNECTING && (what & EPOLLOUT)) {
                c->state = HANDSHAKE;
                if (write(c->fd, request, strlen(request)) < 0) {
                    lose_conn(c);
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            }
            /* What the server sent before a reset (its close frame) is read first. */
            if (c->state != CLOSED && (what & EPOLLIN))
                on_readable(c);
            if (c->state != CLOSED && (what & (EPOLLERR | EPOLLHUP)))
                lose_conn(c);
        }
        open_next();
    }
}

static int every_viewer_settled(void) {
    return connected + failed + closed_count >= count;
}

static int restarted_since_report(void) {
    return restarts > restarts_at_report;
}

static void print_report(void) {
    int saw_end = 0;
    for (int i = 0; i < count; i++)
        saw_end += conns[i].saw_end;
    double span = last_at - first_at;
    printf("{\"type\":\"report\",\"viewers\":%d,\"open\":%d,\"saw_final\":%d,"
           "\"messages\":%llu,\"first\":%.6f,\"last\":%.6f,\"span_s\":%.3f,"
           "\"deliveries_per_s\":%.1f,\"p50_ms\":%.1f,\"p99_ms\":%.1f,\"max_ms\":%.1f",
           count, open_count(), saw_end, (unsigned long long)messages, first_at, last_at, span,
           span > 0 ? messages / span : 0.0, percentile(0.5), percentile(0.99), max_latency());
    print_tally("closes", &closes);
    print_tally("reasons", &reasons);
    /* The histogram itself, sparse, so that several processes' reports can be merged. */
    printf(",\"latency\":{");
    const char *comma = "";
    for (long i = 0; i < BUCKETS; i++) {
        if (histogram[i]) {
            printf("%s\"%ld\":%u", comma, i, histogram[i]);
            comma = ",";
        }
    }
    printf("}}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT PATH COUNT SECONDS END_MARK [IN_FLIGHT]\n",
                argv[0]);
        return 2;
    }
    count = atoi(argv[4]);
    phase_seconds = atof(argv[5]);
    end_mark = argv[6];
    if (argc == 8)
        in_flight_max = atoi(argv[7]);
    if (count < 0 || in_flight_max < 1) {
        fprintf(stderr, "COUNT must be 0 or more, IN_FLIGHT 1 or more\n");
        return 2;
    }
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);

    address.sin_family = AF_INET;
    address.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address\n");
        return 2;
    }
    snprintf(request, sizeof request,
             "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             argv[3], argv[1], argv[2]);
    signal(SIGUSR1, request_restart);
    signal(SIGPIPE, SIG_IGN);
    conns = calloc(count, sizeof *conns);
    histogram = calloc(BUCKETS, sizeof *histogram);
    epfd = epoll_create1(0);

    deadline = now() + 300;
    loop_until(every_viewer_settled);
    printf("{\"type\":\"connected\",\"connected\":%d,\"failed\":%d,\"closed\":%d", connected,
           failed, closed_count);
    print_tally("closes", &closes);
    print_tally("reasons", &reasons);
    printf("}\n");
    fflush(stdout);

    deadline = now() + phase_seconds;
    for (;;) {
        loop_until(all_saw_end);
        print_report();
        restarts_at_report = restarts;
        deadline = now() + phase_seconds; /* for the next phase's SIGUSR1 */
        loop_until(restarted_since_report);
        if (!restarted_since_report())
            return 0;
    }
}
