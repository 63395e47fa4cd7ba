/*
 * Websocket viewers in C, for sizes where a Python client would be the bottleneck.
 *
 *     cc -O2 -o ws_viewers bench/ws_viewers.c
 *     ws_viewers HOST PORT PATH COUNT SECONDS END_MARK
 *
 * Opens COUNT websockets to ws://HOST:PORT/PATH (at most 64 handshakes in flight),
 * prints {"type":"connected",...} once each has its first message (the snapshot), then
 * reads until every open socket has seen a text containing END_MARK, or SECONDS pass
 * (counting afresh from a SIGUSR1, sent when the measured events begin),
 * and prints {"type":"report",...}: messages, latency p50/p99/max in ms (receipt time
 * minus the message's "ts", one clock on this machine), the latency histogram (0.1 ms
 * buckets, as bench/clients.py keeps it) and how many saw the end.
 * Answers pings with pongs; ignores everything else. Loopback only, bounded in time.
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

#define IN_FLIGHT 64
#define BUCKET_S 0.0001 /* latency buckets of 0.1 ms, as bench/clients.py */
#define BUCKETS 600000  /* up to 60 s */

enum state { IDLE, CONNECTING, HANDSHAKE, OPEN, CLOSED };

struct conn {
    int fd;
    enum state state;
    char *buf;
    size_t len, cap;
    int snapshot, saw_end;
};

static struct conn *conns;
static int count, epfd, connected, failed, closed_count, in_flight, next_to_open;
static uint32_t *histogram;
static uint64_t messages;
static double first_at, last_at;
static const char *end_mark;
static struct sockaddr_in address;
static char request[512];
static volatile sig_atomic_t restart_requested;

static void request_restart(int signum) {
    (void)signum;
    restart_requested = 1;
}

/* SIGUSR1: count from now on (what arrived while joining is not the measured phase). */
static void restart_counts(void) {
    restart_requested = 0;
    memset(histogram, 0, BUCKETS * sizeof *histogram);
    messages = 0;
    first_at = last_at = 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void close_conn(struct conn *c) {
    if (c->state == CLOSED)
        return;
    if (c->state == CONNECTING || c->state == HANDSHAKE) {
        failed++;
        in_flight--;
    } else if (c->state == OPEN) {
        closed_count++;
    }
    c->state = CLOSED;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void open_next(void) {
    while (in_flight < IN_FLIGHT && next_to_open < count) {
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
            close_conn(c);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    }
}

static void send_pong(struct conn *c, const unsigned char *payload, size_t n) {
    unsigned char frame[2 + 4 + 125];
    if (n > 125)
        n = 125;
    frame[0] = 0x8A; /* FIN, pong */
    frame[1] = 0x80 | (unsigned char)n; /* masked, as a client must */
    memset(frame + 2, 0, 4); /* a zero mask: the payload goes as it is */
    memcpy(frame + 6, payload, n);
    if (write(c->fd, frame, 6 + n) < 0) {
        /* a full or closed socket: the server's keepalive decides */
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
            send_pong(c, (const unsigned char *)payload, n);
        } else if (opcode == 0x8) {
            close_conn(c);
            return;
        }
        at += head + n;
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
}

static void on_readable(struct conn *c) {
    for (;;) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
        if (got == 0) {
            close_conn(c);
            return;
        }
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                close_conn(c);
            break;
        }
        c->len += got;
    }
    if (c->state == HANDSHAKE) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end)
            return;
        if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0) {
            close_conn(c);
            return;
        }
        size_t rest = c->len - (end + 4 - c->buf);
        memmove(c->buf, end + 4, rest);
        c->len = rest;
        c->state = OPEN;
        in_flight--;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (c->state == OPEN)
        read_frames(c);
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

static void loop_until(double deadline, int (*done)(void)) {
    struct epoll_event events[256];
    while (now() < deadline && !done()) {
        if (restart_requested)
            restart_counts();
        int n = epoll_wait(epfd, events, 256, 50);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->state == CLOSED)
                continue;
            if (events[i].events & (EPOLLERR | EPOLLHUP)) {
                close_conn(c);
                continue;
            }
            if (c->state == CONNECTING && (events[i].events & EPOLLOUT)) {
                c->state = HANDSHAKE;
                if (write(c->fd, request, strlen(request)) < 0) {
                    close_conn(c);
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            }
            if (events[i].events & EPOLLIN)
                on_readable(c);
        }
        open_next();
    }
}

static int every_viewer_settled(void) {
    return connected + failed + closed_count >= count;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT PATH COUNT SECONDS END_MARK\n", argv[0]);
        return 2;
    }
    count = atoi(argv[4]);
    double seconds = atof(argv[5]);
    end_mark = argv[6];
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

    loop_until(now() + 300, every_viewer_settled);
    printf("{\"type\":\"connected\",\"connected\":%d,\"failed\":%d,\"closed\":%d}\n", connected,
           failed, closed_count);
    fflush(stdout);

    loop_until(now() + seconds, all_saw_end);
    int saw_end = 0;
    for (int i = 0; i < count; i++)
        saw_end += conns[i].saw_end;
    double span = last_at - first_at;
    printf("{\"type\":\"report\",\"viewers\":%d,\"open\":%d,\"saw_final\":%d,"
           "\"messages\":%llu,\"first\":%.6f,\"last\":%.6f,\"span_s\":%.3f,"
           "\"deliveries_per_s\":%.1f,\"p50_ms\":%.1f,\"p99_ms\":%.1f,\"max_ms\":%.1f,"
           "\"latency\":{",
           count, open_count(), saw_end, (unsigned long long)messages, first_at, last_at, span,
           span > 0 ? messages / span : 0.0, percentile(0.5), percentile(0.99), max_latency());
    /* The histogram itself, sparse, so that several processes' reports can be merged. */
    const char *comma = "";
    for (long i = 0; i < BUCKETS; i++) {
        if (histogram[i]) {
            printf("%s\"%ld\":%u", comma, i, histogram[i]);
            comma = ",";
        }
    }
    printf("}}\n");
    fflush(stdout);
    return 0;
}
