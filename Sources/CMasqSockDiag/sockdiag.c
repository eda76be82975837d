#include "masq_sockdiag.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

#if defined(__linux__)
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

int masqsockdiag_tcp_owner(int family, const uint8_t *client_addr, uint16_t client_port,
                           const uint8_t *server_addr, uint16_t server_port, uint32_t *uid) {
    if (family != AF_INET && family != AF_INET6) return -1;
    size_t alen = family == AF_INET ? 4 : 16;
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -2;
    struct timeval tv = { .tv_sec = 1, .tv_usec = 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } msg;
    memset(&msg, 0, sizeof msg);
    msg.nlh.nlmsg_len = sizeof msg;
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST;
    msg.nlh.nlmsg_seq = 1;
    msg.req.sdiag_family = (uint8_t)family;
    msg.req.sdiag_protocol = IPPROTO_TCP;
    msg.req.idiag_states = ~0u;
    msg.req.id.idiag_sport = htons(client_port);
    msg.req.id.idiag_dport = htons(server_port);
    memcpy(msg.req.id.idiag_src, client_addr, alen);
    memcpy(msg.req.id.idiag_dst, server_addr, alen);
    msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&kernel, sizeof kernel) != (ssize_t)sizeof msg) {
        close(fd);
        return -2;
    }
    /* One answer: an inet_diag_msg, or an NLMSG_ERROR (ENOENT when not found). */
    long buf[2048 / sizeof(long)];
    ssize_t n;
    do { n = recv(fd, buf, sizeof buf, 0); } while (n < 0 && errno == EINTR);
    close(fd);
    if (n < (ssize_t)sizeof(struct nlmsghdr)) return -2;
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (!NLMSG_OK(h, (unsigned)n)) return -2;
    if (h->nlmsg_type == NLMSG_ERROR) {
        /* ENOENT: no such socket. Anything else (EPERM under a sandbox, ...): unavailable. */
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -2;
        struct nlmsgerr *e = NLMSG_DATA(h);
        return e->error == -ENOENT ? -1 : -2;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return -2;
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) return -1;
    struct inet_diag_msg *d = NLMSG_DATA(h);
    /* The kernel matched the four-tuple; check it anyway before trusting the uid. */
    if (d->idiag_family != family || ntohs(d->id.idiag_sport) != client_port || ntohs(d->id.idiag_dport) != server_port) return -1;
    *uid = d->idiag_uid;
    return 0;
}

#else

int masqsockdiag_tcp_owner(int family, const uint8_t *client_addr, uint16_t client_port,
                           const uint8_t *server_addr, uint16_t server_port, uint32_t *uid) {
    (void)family; (void)client_addr; (void)client_port; (void)server_addr; (void)server_port; (void)uid;
    return -2;
}

#endif
