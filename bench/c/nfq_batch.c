/* The ceiling for bench/live_pps.rs: a minimal libnetfilter_queue loop that judges
 * nothing and accepts everything with batch verdicts, configured as nfqwall configures
 * its queue (copy range 512, queue length 4096, fail-open, a 4608-byte-per-packet
 * receive buffer). Flushes the batch at 64 packets and when the socket has nothing more
 * to read, as nfqwall does. Built by the bench: cc -O2 nfq_batch.c -lnetfilter_queue.
 * Usage: nfq_batch QUEUE. Exits on SIGTERM/SIGINT. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t stop;
static uint32_t last_id;
static unsigned pending;
static unsigned long long packets;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *m, struct nfq_data *d, void *data) {
    (void)m; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(d);
    if (ph) {
        last_id = ntohl(ph->packet_id);
        pending++;
        packets++;
        if (pending >= 64) {
            nfq_set_verdict_batch(qh, last_id, NF_ACCEPT);
            pending = 0;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    int queue = argc > 1 ? atoi(argv[1]) : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: recv returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, queue, cb, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 512) < 0) { perror("nfq_set_mode"); return 1; }
    nfq_set_queue_maxlen(qh, 4096);
    nfq_set_queue_flags(qh, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN);
    int fd = nfq_fd(h);
    int rcvbuf = 4096 * 4608;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    static char buf[65536 + 4096] __attribute__((aligned(8)));
    while (!stop) {
        ssize_t n = recv(fd, buf, sizeof buf, pending ? MSG_DONTWAIT : 0);
        if (n >= 0) {
            nfq_handle_packet(h, buf, (int)n);
        } else if (errno == EAGAIN || errno == EINTR) {
            if (pending) {
                nfq_set_verdict_batch(qh, last_id, NF_ACCEPT);
                pending = 0;
            }
        }
        /* ENOBUFS: read on. */
    }
    if (pending) nfq_set_verdict_batch(qh, last_id, NF_ACCEPT);
    nfq_destroy_queue(qh);
    nfq_close(h);
    fprintf(stderr, "nfq_batch: %llu packets\n", packets);
    return 0;
}
