/* cache_uds: the executor <-> squall-cache request channel on a unix socket.
 *
 * Why: a miss used to cost a ZeroMQ ipc round trip (~170 us on a busy 2-core VM: the
 * executor's zmq I/O thread, the daemon's, and back: four thread hand-offs) before the
 * KVS fetch even started. A SOCK_SEQPACKET unix socket keeps message boundaries (one
 * datagram = one protobuf message, as on ZeroMQ) and needs no I/O thread: the
 * executor sends and waits on the socket itself, the daemon polls the fd in the same
 * zmq_poll as its other sockets. The ZeroMQ sockets stay (stock clients, hit reports,
 * puts); this channel is an addition, not a replacement.
 *
 *   executor                         <dir>/requests.sock              squall-cache
 *   connect() once ----------------> listen/accept (up to 128 conns)
 *   KeyRequest GET (1 datagram) ---> answered on the same connection, in order of
 *   <-- KeyResponse (1 datagram)     completion (response_id = request_id)
 *
 * Protocol: only GET. Every request is answered (there is no fire-and-forget form;
 * response_address is ignored). A key the daemon had to fetch may come back WITH its
 * lattice payload inline (KeyTuple.payload, the KVS's bytes) when it is small enough
 * (CACHE_UDS_INLINE_MAX and the reply fits one datagram): the daemon answers before it
 * stores the value, so the executor need not wait for the store nor read LMDB again.
 * Without a payload, the value is in LMDB when the reply is sent (as on ZeroMQ).
 * Request datagrams are at most CACHE_UDS_MAX_REQUEST bytes; larger ones are refused.
 *
 * Direct misses (docs/cache.md "Direct misses"): a single-key GET whose
 * response_address is set (an executor's ZeroMQ PULL endpoint on the host the daemon
 * gives the KVS, --public-ip) and whose request_id is a valid tag (kvs_client_via_t)
 * lets the daemon start its one KVS fetch of that key with the executor's address:
 * the KeyResponse goes straight to the executor (response_id "<daemon's client
 * id>_<n>.<request_id>"), and nothing comes back on the unix socket for it when that
 * answer is final. The executor waits on both, and hands every KeyResponse it got
 * from the KVS back (FILL, no reply), so that the daemon stores the value and answers
 * the other waiters of the key. The answer is final -- the executor's, and the daemon
 * does not reply -- when it is KEY_DNE or a value of at most CACHE_UDS_INLINE_MAX
 * bytes. Otherwise the usual reply comes on the socket: after a server error, once a
 * larger value is stored (so it is read zero copy), or when the fetch was joined,
 * answered from the cache, failed, or re-read by the daemon (no FILL within its
 * bound). The FILL goes to requests-get as a two-frame ZeroMQ message (u8 0 u8 'F',
 * then the KeyResponse: the executor moves the message it received, no copy), or,
 * when that socket takes nothing now, as a datagram here (up to CACHE_UDS_MAX_FILL);
 * when neither is possible, NOFILL makes the daemon read the key itself at once.
 * With an empty response_address (fetch(), older executors) a request is answered
 * here as before.
 *
 *   FILL    u8 0, u8 'F', the KeyResponse exactly as received from the KVS
 *   NOFILL  u8 0, u8 'N'
 *
 * Lease FILL (requests-get only; docs/cache.md "Fetch leases"): an executor that
 * claimed a key's lease (cache_lease.h) and read the value from the KVS itself hands
 * it over without waiting, as two frames:
 *
 *   u8 0, u8 'L', u32 token (LE), u32 lattice type (LE), key bytes (1..511, no NUL)
 *   the lattice payload exactly as the KVS returned it
 *
 * The daemon stores it as it stores a fetch result (merged into what is cached) and
 * then releases the lease (token), waking the executors that wait for the key.
 *
 * (A protobuf message never starts with byte 0, so these never look like requests.)
 *
 * These helpers are the client side (blocking, with timeouts); the daemon's side is
 * cache/daemon_uds.c. Threads: a connection belongs to one thread at a time.
 * Errors: 0, -errno, SQ_ETIMEOUT, SQ_ETOOBIG, SQ_ECLOSED (the daemon closed it).
 */
#ifndef CACHE_UDS_H
#define CACHE_UDS_H

#include <stddef.h>

#include "sq_buf.h"

#define CACHE_UDS_NAME "requests.sock"
#define CACHE_UDS_MAX_REQUEST ((size_t)1 << 20)
#define CACHE_UDS_INLINE_MAX ((size_t)1 << 20) /* largest payload sent inline */
#define CACHE_UDS_MAX_FILL ((size_t)3 << 20)   /* largest KeyResponse in a FILL datagram */
#define CACHE_UDS_SNDBUF (4 << 20)             /* asked for; the kernel may give less */

#define CACHE_UDS_FILL 'F'
#define CACHE_UDS_NOFILL 'N'
#define CACHE_UDS_LEASE_FILL 'L'

/* <dir>/kvs-routing: the daemon's --kvs (routing endpoints, comma-separated, one
 * line of at most CACHE_UDS_ROUTING_MAX bytes), written when it listens, so that an
 * executor can read the KVS itself under a fetch lease (cache_lease.h). */
#define CACHE_UDS_ROUTING_NAME "kvs-routing"
#define CACHE_UDS_ROUTING_MAX 2048

/* Reads <dir>/kvs-routing into buf (NUL-terminated, newline removed). 0, -ENOENT,
 * SQ_EINVAL (empty, longer than cap - 1 or CACHE_UDS_ROUTING_MAX, or a byte outside
 * [A-Za-z0-9.:/,*_[]-]), -errno. */
int cache_uds_routing(const char *dir, char *buf, size_t cap);

/* <dir>/reply-host: the host the daemon gives the KVS (--public-ip), written by the
 * daemon when it listens, so that an executor binds its PULL socket where the KVS can
 * reach it (direct misses). One line, at most CACHE_UDS_HOST_MAX bytes. */
#define CACHE_UDS_HOST_NAME "reply-host"
#define CACHE_UDS_HOST_MAX 63

/* Reads <dir>/reply-host into buf (NUL-terminated; cap > CACHE_UDS_HOST_MAX). 0,
 * -ENOENT (no daemon wrote one), SQ_EINVAL (not a host name or address: only
 * [A-Za-z0-9.-], or ':' inside [...]), -errno. */
int cache_uds_reply_host(const char *dir, char *buf, size_t cap);

/* Connects to <dir>/requests.sock. On 0, *fd is the caller's (close()). -ENOENT or
 * -ECONNREFUSED when no daemon (of this version) listens, SQ_ETOOBIG when the path
 * does not fit a sockaddr_un, other -errno. */
int cache_uds_connect(const char *dir, int *fd);

/* Sends one datagram, waiting at most timeout_ms for room. 0, SQ_ETIMEOUT, SQ_ECLOSED
 * (peer gone), -EMSGSIZE, -errno. */
int cache_uds_send(int fd, const void *buf, size_t len, int timeout_ms);

/* Hands a KVS KeyResponse (bytes borrowed) back to the daemon as a FILL datagram,
 * without waiting. 0, -EMSGSIZE (over CACHE_UDS_MAX_FILL or what the socket takes:
 * hand it back on
 * requests-get, or send NOFILL), -EAGAIN (no room now), SQ_ECLOSED, -errno. */
int cache_uds_send_fill(int fd, const void *resp, size_t len);

/* Sends NOFILL (the daemon then reads the key itself), without waiting. 0, -EAGAIN,
 * SQ_ECLOSED, -errno. */
int cache_uds_send_nofill(int fd);

/* Waits up to timeout_ms for one datagram and appends it to *out (which is reset
 * first). 0, SQ_ETIMEOUT, SQ_ECLOSED (the daemon closed the connection), SQ_ETOOBIG
 * (larger than max), -ENOMEM, -errno. */
int cache_uds_recv(int fd, int timeout_ms, size_t max, sq_buf_t *out);

#endif
