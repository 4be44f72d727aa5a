/* The asynchronous client's shared state: async.c is the caller's side
 * (encode, queue, flush, stats), async_io.c the I/O thread. Everything in
 * struct dnnfault_client below `lock` is guarded by it. */
#ifndef DNNFAULT_ASYNC_H
#define DNNFAULT_ASYNC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "backoff.h"
#include "dnnfault.h"
#include "queue.h"

#define ASYNC_DEFAULT_QUEUE_BYTES (64u * 1024u * 1024u)
#define ASYNC_DEFAULT_CONNECT_TIMEOUT_MS 2000
#define ASYNC_DEFAULT_BACKOFF_INITIAL_MS 100
#define ASYNC_DEFAULT_BACKOFF_MAX_MS 5000
/* Steps are not sent one by one: waking the I/O thread for each costs the
 * training thread a context switch (on a busy 2-core machine, a third of
 * the monitor's cost of a small CNN trained with every step sampled).
 * While steps keep coming, an idle thread looks at the queue every
 * ASYNC_STEP_DELAY_MS and sends what has arrived in one batch, so the
 * training thread makes no system call for a step. It is woken at once
 * for any other message, a flush, and unsent steps reaching
 * ASYNC_WAKE_BYTES (or a quarter of a smaller queue). After
 * ASYNC_ASLEEP_MS without anything to send it stops looking and sleeps
 * until woken; the first step after that wakes it. */
#define ASYNC_STEP_DELAY_MS 20
#define ASYNC_ASLEEP_MS 1000
#define ASYNC_WAKE_BYTES (256u * 1024u)

struct dnnfault_client {
	/* Set before the thread starts, then read-only. */
	struct address addr;
	char addr_text[ADDRESS_PATH_MAX + 16];
	char *token;			/* NULL: none */
	int connect_timeout_ms;
	int wake_fd;			/* eventfd: wakes the I/O thread */
	pthread_t thread;
	struct backoff backoff;		/* the I/O thread's own */

	pthread_mutex_t lock;
	pthread_cond_t settled;		/* signalled when messages leave the queue */
	struct queue q;
	bool stop;
	bool io_idle;			/* the thread waits with nothing to write */
	bool io_asleep;			/* ... and without looking again (async.h) */
	bool connected, ever_connected;
	int flushers;			/* threads waiting on `settled` */
	uint64_t reconnects;
	uint64_t refused_stream;	/* the last stream whose RunStart was refused, or 0 */
	char last_error[256];
};

/* async_io.c: the thread's body. */
void *async_io__main(void *arg);

/* Wakes the I/O thread; safe from any thread, lock held or not. */
void async__wake(struct dnnfault_client *c);

/* Records a message for dnnfault_client_stats(); the lock is held. */
void async__error(struct dnnfault_client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
