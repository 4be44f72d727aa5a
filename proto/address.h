/* Where the daemon listens and where clients look for it. Shared so that the
 * daemon's default path and the clients' default address never disagree. */
#ifndef DNNFAULT_ADDRESS_H
#define DNNFAULT_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADDRESS_ENV "DNNFAULT_ADDRESS"
#define ADDRESS_SOCKET_NAME "dnnfaultd.sock"
#define ADDRESS_SYSTEM_RUNTIME_DIR "/run/dnnfault"
#define ADDRESS_PATH_MAX 108	/* sizeof(sockaddr_un.sun_path) */
#define ADDRESS_HOST_MAX 256

enum address_kind { ADDRESS_UNIX, ADDRESS_TCP };

struct address {
	enum address_kind kind;
	char path[ADDRESS_PATH_MAX];	/* ADDRESS_UNIX */
	char host[ADDRESS_HOST_MAX];	/* ADDRESS_TCP, without brackets */
	uint16_t port;
};

/* Parses "unix:/path", "tcp://host:port", "tcp://[v6]:port", "host:port"
 * (TCP) or "/path" (Unix). Returns 0 or -EINVAL. */
int address__parse(const char *text, struct address *out);

/* Formats an address back into its canonical text. */
void address__format(const struct address *a, char *buf, size_t len);

/* The daemon's runtime directory when no socket path is configured:
 * $RUNTIME_DIRECTORY under systemd, else $XDG_RUNTIME_DIR/dnnfault, else
 * /tmp/dnnfault-UID. Returns 0 or -ENAMETOOLONG. */
int address__runtime_dir(char *buf, size_t len);

/* The daemon's default socket path: runtime dir + "/dnnfaultd.sock". */
int address__default_socket(char *buf, size_t len);

/* The address a client uses when none is given: $DNNFAULT_ADDRESS, else the
 * first of the user default socket and /run/dnnfault/dnnfaultd.sock that
 * exists, else the user default. Returns 0 or a negative errno. */
int address__client_default(struct address *out);

/* True for TCP hosts that only this machine can reach. */
bool address__is_loopback_host(const char *host);

#endif
