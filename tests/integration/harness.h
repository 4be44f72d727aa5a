/* Shared pieces of the integration tests: a real dnnfaultd on a temporary
 * socket and database, raw protocol access, and the real dnnfaultctl.
 * Binaries come from $DNNFAULTD and $DNNFAULTCTL (set by meson). */
#ifndef DNNFAULT_HARNESS_H
#define DNNFAULT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dnnfault.pb-c.h"

struct daemon {
	pid_t pid;
	char dir[40];
	char socket[100];
	char db[128];
	char log[128];
	char address[160];
};

/* Makes the temp directory and fills in the paths and the address, without
 * starting anything (first call only; harness__start calls it). */
void harness__prepare(struct daemon *d);

/* Makes a temp directory (first call only) and starts dnnfaultd there with
 * `args` (NULL-terminated, may be NULL) added; waits until it answers. */
void harness__start(struct daemon *d, const char *const *args);

/* Sends `sig` and waits for the daemon; returns its exit status, or 128+sig. */
int harness__stop(struct daemon *d, int sig);

/* Stops the daemon if it runs and removes the directory. */
void harness__cleanup(struct daemon *d);

/* A raw connection to the daemon's socket (fd), or -1. */
int harness__connect(const struct daemon *d);
void harness__send_bytes(int fd, const void *buf, size_t len);
void harness__send(int fd, const Dnnfault__Envelope *env);
void harness__send_hello(int fd, Dnnfault__Role role, uint32_t version);

/* Hello plus the Welcome; fails the test otherwise. */
void harness__handshake(int fd, Dnnfault__Role role);

/* Next frame within timeout_ms, or NULL (timeout, EOF or a bad frame). */
Dnnfault__Envelope *harness__recv(int fd, int timeout_ms);

/* Waits for an Error frame and checks its code and fatality. */
void harness__expect_error(int fd, Dnnfault__ErrorCode code, bool fatal);

/* True when the peer closed the connection within timeout_ms. */
bool harness__closed(int fd, int timeout_ms);

/* Runs dnnfaultctl with the daemon's address and `args`; its stdout goes
 * into `out` (may be NULL). Returns the exit code. */
int harness__ctl(const struct daemon *d, char *out, size_t len, const char *args);

/* A counter from `dnnfaultctl --json stats`. */
uint64_t harness__counter(const struct daemon *d, const char *name);

/* A run start / step envelope body for stream `stream`. */
void harness__run_start(Dnnfault__RunStart *m, uint64_t stream, const char *run_id, size_t n_layers);
void harness__step(Dnnfault__Step *m, uint64_t stream, uint64_t seq, uint64_t step,
		   float *stats, size_t n_layers);

/* Counts how often each step number of `stream` is stored (counts[step]++,
 * steps below n_counts), decoding the daemon's step chunks; check(step) is
 * called for each decoded record when not NULL. */
void harness__count_steps(const struct daemon *d, uint64_t stream, uint32_t *counts,
			  uint64_t n_counts, void (*check)(const Dnnfault__Step *s));

#endif
