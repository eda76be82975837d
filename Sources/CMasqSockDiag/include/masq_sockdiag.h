/* Which OS user owns the other end of a loopback TCP connection.
 * Linux answers this exactly and cheaply through the sock_diag netlink
 * interface (what `ss` uses): one request names the client socket by its
 * four-tuple and the kernel returns its owner's uid. Scanning /proc/net/tcp
 * instead costs time proportional to every socket on the machine. */
#ifndef MASQ_SOCKDIAG_H
#define MASQ_SOCKDIAG_H

#include <stdint.h>

/** The uid owning the TCP socket whose local end is client_addr:client_port
 *  and whose remote end is server_addr:server_port. family is AF_INET (addresses
 *  are 4 bytes) or AF_INET6 (16 bytes); addresses in network order, ports in host
 *  order. Returns 0 and sets *uid on success; -1 when no such socket exists;
 *  -2 when sock_diag itself is unavailable (the caller may fall back).
 *  Thread-safe: each call opens and closes its own netlink socket. */
int masqsockdiag_tcp_owner(int family, const uint8_t *client_addr, uint16_t client_port,
                           const uint8_t *server_addr, uint16_t server_port, uint32_t *uid);

#endif
