/* The asynchronous client's send queue: encoded frames in the order they
 * were queued, kept until the daemon acknowledges them, with the drop
 * policy for a full queue and the bookkeeping for resending after a
 * reconnect. A pure data structure: no I/O, no locking (async.c holds its
 * mutex around every call).
 *
 * The writer works on a prefix: queue__batch() hands out the frames after
 * the cursor and marks them claimed; until queue__advance() moves the
 * cursor over the bytes written, the writer may use them without the lock,
 * because nothing but acknowledgements and rejections (which only concern
 * fully written frames) and the drop policy (which never touches claimed
 * frames) removes a frame. */
#ifndef DNNFAULT_QUEUE_H
#define DNNFAULT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "encode.h"

enum queue_kind { QUEUE_RUN_START = 1, QUEUE_STEP, QUEUE_EPOCH, QUEUE_RUN_END };

struct queue_stream;

struct queue_msg {
	struct queue_msg *prev, *next;	/* queue order */
	struct queue_msg *s_prev, *s_next;	/* the same stream's, in seq order */
	struct queue_stream *stream;
	uint64_t seq;
	uint64_t ticket;		/* position in queue order, for flush */
	enum queue_kind kind;
	bool claimed;			/* handed to the writer once: never dropped */
	bool done;			/* fully written on the current connection */
	uint8_t *buf;			/* the frame, owned */
	size_t len;
};

struct queue_stream {
	uint64_t id;
	uint64_t next_seq;
	uint64_t dropped;		/* steps of this stream dropped so far */
	bool ended;			/* RunEnd queued */
	struct queue_msg *head, *tail;	/* its messages still queued */
	struct queue_stream *next;
};

struct queue {
	size_t max_bytes;
	size_t bytes;			/* frames + QUEUE_MSG_OVERHEAD each */
	size_t n_msgs;
	size_t droppable_bytes;		/* of unclaimed steps */
	struct queue_msg *head, *tail;
	struct queue_msg *cursor;	/* first frame not fully written */
	size_t cursor_off;		/* bytes of it already written */
	struct queue_msg *unclaimed;	/* first never-claimed frame; all after it too */
	struct queue_stream *streams;
	uint64_t next_ticket;
	uint64_t queued, sent, acked, dropped, rejected;
};

/* What a queued message costs besides its frame. */
#define QUEUE_MSG_OVERHEAD (sizeof(struct queue_msg))

/* Encodes a message of the stream with its sequence number and the
 * stream's cumulative drop count; same returns as encode.h. */
typedef int (*queue_encode_fn)(void *arg, uint64_t seq, uint64_t dropped,
			       struct encode_frame *out);

/* What queue__push did when it returned 0 or more. */
enum queue_push_result { QUEUE_QUEUED = 0, QUEUE_DROPPED = 1 };

void queue__init(struct queue *q, size_t max_bytes);

/* Frees every frame and stream. */
void queue__free(struct queue *q);

/* Queues one message of stream `id`; QUEUE_RUN_START opens the stream
 * (it must not exist yet). Room is made by dropping the oldest steps that
 * were never handed to the writer and whose stream has not ended (so that
 * a RunEnd's drop count is final), each counted in its stream's and the
 * queue's `dropped`; when that cannot make room, a step drops itself
 * (QUEUE_DROPPED) and other kinds fail with -ENOBUFS. When making room
 * dropped steps of the same stream, the frame is encoded again so that the
 * drop count it carries is current. Returns QUEUE_QUEUED, QUEUE_DROPPED,
 * -ENOENT (no such stream, or it has ended), -EEXIST (run start of an open
 * stream), -EINVAL (the frame is larger than the whole queue), -ENOBUFS,
 * or an encoder error. */
int queue__push(struct queue *q, uint64_t id, enum queue_kind kind,
		queue_encode_fn enc, void *arg);

struct queue_stream *queue__stream(const struct queue *q, uint64_t id);

/* Oversized frames that queue__batch removed (counted as rejected). */
struct queue_oversize {
	size_t n;
	uint64_t stream, seq;		/* the last one */
	size_t len;
};

/* Fills iov with the unwritten bytes after the cursor, at most max_iov
 * frames and about max_bytes, and marks those frames claimed. A frame
 * longer than max_frame is removed instead (it can never be sent) and
 * reported in *over. Returns the number of iovecs. */
size_t queue__batch(struct queue *q, size_t max_frame, struct iovec *iov,
		    size_t max_iov, size_t max_bytes, struct queue_oversize *over);

/* The writer wrote `n` bytes from the cursor on. */
void queue__advance(struct queue *q, size_t n);

/* Cumulative acknowledgement: removes the stream's fully written frames
 * with seq <= `seq`. Returns how many. */
size_t queue__ack(struct queue *q, uint64_t stream, uint64_t seq);

/* The daemon rejected (stream, seq): removes that frame if it was fully
 * written. Returns 1 when removed, else 0. */
int queue__reject(struct queue *q, uint64_t stream, uint64_t seq);

/* A new connection: everything still queued is to be written again. */
void queue__rewind(struct queue *q);

/* Whether some frame is waiting to be written. */
bool queue__pending(const struct queue *q);

/* The ticket of the last message queued so far (0: none yet). */
uint64_t queue__last_ticket(const struct queue *q);

/* Whether every message up to `ticket` has left the queue (acknowledged,
 * rejected or dropped). */
bool queue__settled(const struct queue *q, uint64_t ticket);

#endif
