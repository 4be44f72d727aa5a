/* The async client's queue: order, acknowledgements, resends, the drop
 * policy and its counts, the byte bound, rejections, and a concurrent run. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"

/* What the test queues: real frames from encode.c. */
struct msg {
	enum queue_kind kind;
	uint64_t stream;
	uint64_t step;
	size_t n_layers;
};

static float stats[64 * DNNFAULT_STATS_PER_LAYER];

static int test_encode(void *arg, uint64_t seq, uint64_t dropped, struct encode_frame *out)
{
	const struct msg *m = arg;
	struct encode_ctx ctx = {.stream = m->stream, .seq = seq, .now = 1.0,
				 .max_payload = FRAME_MAX_LIMIT};
	switch (m->kind) {
	case QUEUE_RUN_START: {
		struct dnnfault_run_info info = {.run_id = "r"};
		return encode__run_start(&info, &ctx, out);
	}
	case QUEUE_STEP: {
		struct dnnfault_step s = {.step = m->step, .layer_stats = stats,
					  .n_layers = m->n_layers, .dropped = dropped};
		return encode__step(&s, &ctx, out);
	}
	case QUEUE_EPOCH: {
		struct dnnfault_epoch e = {.epoch = (uint32_t)m->step, .step = m->step};
		return encode__epoch(&e, &ctx, out);
	}
	case QUEUE_RUN_END: {
		struct dnnfault_run_end e = {.status = DNNFAULT_END_COMPLETED, .dropped = dropped};
		return encode__run_end(&e, &ctx, out);
	}
	}
	return -EINVAL;
}

static int push(struct queue *q, enum queue_kind kind, uint64_t stream, uint64_t step,
		size_t n_layers)
{
	struct msg m = {.kind = kind, .stream = stream, .step = step, .n_layers = n_layers};
	return queue__push(q, stream, kind, test_encode, &m);
}

/* Decoded frames of a batch, as the daemon would read them. */
struct seen {
	uint64_t stream, seq, step, dropped;
	int kind;
};

static size_t decode(const struct iovec *iov, size_t n, struct seen *out, size_t max)
{
	size_t k = 0;
	for (size_t i = 0; i < n && k < max; i++) {
		const uint8_t *p = iov[i].iov_base;
		Dnnfault__Envelope *e = frame__decode(p + FRAME_HEADER_BYTES,
						      iov[i].iov_len - FRAME_HEADER_BYTES);
		assert_non_null(e);
		struct seen *s = &out[k++];
		memset(s, 0, sizeof *s);
		s->kind = e->body_case;
		switch (e->body_case) {
		case DNNFAULT__ENVELOPE__BODY_RUN_START:
			s->stream = e->run_start->stream;
			s->seq = e->run_start->seq;
			break;
		case DNNFAULT__ENVELOPE__BODY_STEP:
			s->stream = e->step->stream;
			s->seq = e->step->seq;
			s->step = e->step->step;
			s->dropped = e->step->dropped;
			break;
		case DNNFAULT__ENVELOPE__BODY_EPOCH:
			s->stream = e->epoch->stream;
			s->seq = e->epoch->seq;
			break;
		case DNNFAULT__ENVELOPE__BODY_RUN_END:
			s->stream = e->run_end->stream;
			s->seq = e->run_end->seq;
			s->dropped = e->run_end->dropped;
			break;
		default:
			fail_msg("unexpected frame");
		}
		frame__free(e);
	}
	return k;
}

/* Writes everything pending (whole frames) and returns what was written. */
static size_t write_all(struct queue *q, struct seen *out, size_t max)
{
	struct iovec iov[1024];
	struct queue_oversize over = {0};
	size_t n = queue__batch(q, SIZE_MAX, iov, 1024, SIZE_MAX, &over);
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += iov[i].iov_len;
	size_t k = decode(iov, n, out, max);
	queue__advance(q, bytes);
	return k;
}

static void order_ack_and_resend(void **state)
{
	(void)state;
	struct queue q;
	queue__init(&q, 1 << 20);
	assert_int_equal(push(&q, QUEUE_RUN_START, 7, 0, 0), QUEUE_QUEUED);
	for (uint64_t i = 0; i < 5; i++)
		assert_int_equal(push(&q, QUEUE_STEP, 7, i, 1), QUEUE_QUEUED);
	assert_int_equal(push(&q, QUEUE_STEP, 8, 0, 1), -ENOENT);
	assert_int_equal(push(&q, QUEUE_RUN_START, 7, 0, 0), -EEXIST);
	assert_true(queue__pending(&q));

	struct seen s[16];
	assert_int_equal(write_all(&q, s, 16), 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(s[i].seq, i + 1);
	assert_false(queue__pending(&q));
	assert_int_equal(q.sent, 6);

	/* Cumulative: up to seq 3; the rest stays until acknowledged. */
	assert_int_equal(queue__ack(&q, 7, 3), 3);
	assert_int_equal(q.n_msgs, 3);
	assert_int_equal(queue__ack(&q, 7, 2), 0);
	assert_int_equal(queue__ack(&q, 99, 100), 0);

	/* Reconnect: what is left goes out again, in order. */
	queue__rewind(&q);
	assert_int_equal(write_all(&q, s, 16), 3);
	assert_int_equal(s[0].seq, 4);
	assert_int_equal(s[2].seq, 6);
	assert_int_equal(q.sent, 9);
	assert_int_equal(queue__ack(&q, 7, 6), 3);
	assert_int_equal(q.acked, 6);
	assert_int_equal(q.n_msgs, 0);
	assert_int_equal(q.bytes, 0);
	queue__free(&q);
}

static void partial_writes_and_unwritten_frames(void **state)
{
	(void)state;
	struct queue q;
	queue__init(&q, 1 << 20);
	push(&q, QUEUE_RUN_START, 1, 0, 0);
	push(&q, QUEUE_STEP, 1, 0, 2);
	struct iovec iov[4];
	struct queue_oversize over = {0};
	assert_int_equal(queue__batch(&q, SIZE_MAX, iov, 4, SIZE_MAX, &over), 2);
	size_t first = iov[0].iov_len;
	queue__advance(&q, first + 3);
	/* The daemon cannot acknowledge what it has not fully read. */
	assert_int_equal(queue__ack(&q, 1, 2), 1);
	assert_int_equal(queue__batch(&q, SIZE_MAX, iov, 4, SIZE_MAX, &over), 1);
	size_t rest = iov[0].iov_len;
	queue__advance(&q, rest);
	assert_int_equal(queue__ack(&q, 1, 2), 1);
	queue__free(&q);
}

static void acks_per_stream(void **state)
{
	(void)state;
	struct queue q;
	queue__init(&q, 1 << 20);
	push(&q, QUEUE_RUN_START, 1, 0, 0);
	push(&q, QUEUE_RUN_START, 2, 0, 0);
	for (uint64_t i = 0; i < 4; i++) {
		push(&q, QUEUE_STEP, 1, i, 1);
		push(&q, QUEUE_STEP, 2, i, 1);
	}
	struct seen s[16];
	assert_int_equal(write_all(&q, s, 16), 10);
	push(&q, QUEUE_STEP, 2, 4, 1);		/* seq 6 of stream 2: not written */
	assert_int_equal(queue__ack(&q, 2, 100), 5);
	assert_int_equal(q.n_msgs, 6);
	uint64_t ticket = queue__last_ticket(&q);
	assert_false(queue__settled(&q, ticket));
	assert_int_equal(queue__ack(&q, 1, 4), 4);
	assert_int_equal(queue__ack(&q, 1, 5), 1);
	assert_false(queue__settled(&q, ticket));
	assert_true(queue__settled(&q, ticket - 1));
	assert_int_equal(write_all(&q, s, 16), 1);
	assert_int_equal(s[0].stream, 2);
	assert_int_equal(s[0].seq, 6);
	assert_int_equal(queue__ack(&q, 2, 6), 1);
	assert_true(queue__settled(&q, ticket));
	queue__free(&q);
}

/* Frame + bookkeeping of one step with `layers` layers. */
static size_t step_cost(size_t layers)
{
	struct msg m = {.kind = QUEUE_STEP, .stream = 1, .n_layers = layers};
	struct encode_frame f;
	assert_int_equal(test_encode(&m, 1, 0, &f), 0);
	size_t n = f.len + QUEUE_MSG_OVERHEAD;
	encode__free(&f);
	return n;
}

static void drop_oldest_unsent_steps(void **state)
{
	(void)state;
	size_t cost = step_cost(4);
	struct queue q;
	/* Room for the run start, an epoch and about ten steps. */
	queue__init(&q, 12 * cost);
	assert_int_equal(push(&q, QUEUE_RUN_START, 1, 0, 0), QUEUE_QUEUED);
	assert_int_equal(push(&q, QUEUE_RUN_START, 2, 0, 0), QUEUE_QUEUED);
	assert_int_equal(push(&q, QUEUE_STEP, 1, 0, 4), QUEUE_QUEUED);
	assert_int_equal(push(&q, QUEUE_STEP, 1, 1, 4), QUEUE_QUEUED);
	/* Written but not acknowledged: never dropped. */
	struct seen s[64];
	assert_int_equal(write_all(&q, s, 64), 4);
	assert_int_equal(push(&q, QUEUE_EPOCH, 1, 0, 0), QUEUE_QUEUED);
	uint64_t step = 2;
	for (int i = 0; i < 40; i++) {
		assert_int_equal(push(&q, QUEUE_STEP, 1 + (uint64_t)(i % 2), step++, 4), QUEUE_QUEUED);
		assert_true(q.bytes <= q.max_bytes);
	}
	assert_true(q.dropped > 0);
	struct queue_stream *s1 = queue__stream(&q, 1), *s2 = queue__stream(&q, 2);
	assert_int_equal(s1->dropped + s2->dropped, q.dropped);
	assert_true(s1->dropped > 0 && s2->dropped > 0);
	assert_int_equal(q.queued, q.n_msgs + q.dropped);

	/* What is left: the run starts, the written steps, the epoch and the
	 * newest steps, in order; each step carries its stream's drop count as
	 * it was when the step was queued. */
	queue__rewind(&q);
	size_t n = write_all(&q, s, 64);
	assert_int_equal(n, q.n_msgs);
	assert_int_equal(s[0].kind, DNNFAULT__ENVELOPE__BODY_RUN_START);
	assert_int_equal(s[1].kind, DNNFAULT__ENVELOPE__BODY_RUN_START);
	assert_int_equal(s[2].step, 0);
	assert_int_equal(s[3].step, 1);
	assert_int_equal(s[4].kind, DNNFAULT__ENVELOPE__BODY_EPOCH);
	uint64_t first_kept = s[5].step;
	assert_true(first_kept > 2);
	uint64_t last[3] = {0, 0, 0};
	for (size_t i = 5; i < n; i++) {
		assert_int_equal(s[i].kind, DNNFAULT__ENVELOPE__BODY_STEP);
		assert_int_equal(s[i].step, first_kept + (i - 5));
		assert_true(s[i].dropped >= last[s[i].stream]);
		assert_true(s[i].dropped <= (s[i].stream == 1 ? s1 : s2)->dropped);
		last[s[i].stream] = s[i].dropped;
	}
	/* The newest step (of stream 2) carries its stream's count including
	 * the drops that made room for it. */
	assert_int_equal(s[n - 1].stream, 2);
	assert_int_equal(s[n - 1].dropped, s2->dropped);
	assert_true(s[n - 1].dropped > 0);
	queue__free(&q);
}

static void nothing_droppable(void **state)
{
	(void)state;
	size_t cost = step_cost(4);
	struct queue q;
	queue__init(&q, 4 * cost);
	assert_int_equal(push(&q, QUEUE_RUN_START, 1, 0, 0), QUEUE_QUEUED);
	for (uint64_t i = 0; i < 3; i++)
		push(&q, QUEUE_STEP, 1, i, 4);
	struct seen s[8];
	write_all(&q, s, 8);		/* everything in flight */
	q.max_bytes = q.bytes + 20;	/* and no room for more */
	uint64_t queued = q.queued;
	/* A new step has nothing older to push out: it drops itself. */
	assert_int_equal(push(&q, QUEUE_STEP, 1, 3, 4), QUEUE_DROPPED);
	assert_int_equal(q.dropped, 1);
	assert_int_equal(queue__stream(&q, 1)->dropped, 1);
	assert_int_equal(q.queued, queued);
	/* An epoch or run end is never dropped; with no room it fails. */
	assert_int_equal(push(&q, QUEUE_EPOCH, 1, 0, 0), -ENOBUFS);
	assert_int_equal(push(&q, QUEUE_RUN_END, 1, 0, 0), -ENOBUFS);
	/* Larger than the whole queue: can never be queued. */
	assert_int_equal(push(&q, QUEUE_STEP, 1, 4, 64), -EINVAL);
	assert_true(q.bytes <= q.max_bytes);
	/* After acknowledgements there is room again; the sequence numbers
	 * carry on and the run end reports the drop. */
	assert_int_equal(queue__ack(&q, 1, 4), 4);
	assert_int_equal(push(&q, QUEUE_RUN_END, 1, 0, 0), QUEUE_QUEUED);
	assert_int_equal(push(&q, QUEUE_STEP, 1, 5, 4), -ENOENT);
	assert_int_equal(write_all(&q, s, 8), 1);
	assert_int_equal(s[0].kind, DNNFAULT__ENVELOPE__BODY_RUN_END);
	assert_int_equal(s[0].seq, 5);
	assert_int_equal(s[0].dropped, 1);
	/* An ended stream goes once its last message is acknowledged. */
	assert_int_equal(queue__ack(&q, 1, 5), 1);
	assert_null(queue__stream(&q, 1));
	queue__free(&q);
}

static void run_end_keeps_its_steps(void **state)
{
	(void)state;
	size_t cost = step_cost(4);
	struct queue q;
	queue__init(&q, 10 * cost);
	push(&q, QUEUE_RUN_START, 1, 0, 0);
	push(&q, QUEUE_RUN_START, 2, 0, 0);
	for (uint64_t i = 0; i < 3; i++)
		push(&q, QUEUE_STEP, 1, i, 4);
	assert_int_equal(push(&q, QUEUE_RUN_END, 1, 0, 0), QUEUE_QUEUED);
	/* Stream 1 has ended: its steps stay, so its run end's count holds. */
	for (uint64_t i = 0; i < 20; i++)
		push(&q, QUEUE_STEP, 2, i, 4);
	assert_int_equal(queue__stream(&q, 1)->dropped, 0);
	assert_true(queue__stream(&q, 2)->dropped > 0);
	assert_true(q.bytes <= q.max_bytes);
	queue__free(&q);
}

static void rejected_and_oversize(void **state)
{
	(void)state;
	struct queue q;
	queue__init(&q, 1 << 20);
	push(&q, QUEUE_RUN_START, 1, 0, 0);
	push(&q, QUEUE_STEP, 1, 0, 1);
	push(&q, QUEUE_STEP, 1, 1, 64);	/* too large for a small daemon */
	push(&q, QUEUE_STEP, 1, 2, 1);
	/* Not written yet: a rejection cannot be about it. */
	assert_int_equal(queue__reject(&q, 1, 2), 0);

	struct iovec iov[8];
	struct queue_oversize over = {0};
	size_t n = queue__batch(&q, 1024, iov, 8, SIZE_MAX, &over);
	assert_int_equal(n, 3);
	assert_int_equal(over.n, 1);
	assert_int_equal(over.seq, 3);
	assert_int_equal(q.rejected, 1);
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += iov[i].iov_len;
	queue__advance(&q, bytes);

	assert_int_equal(queue__reject(&q, 1, 2), 1);
	assert_int_equal(queue__reject(&q, 1, 2), 0);
	assert_int_equal(q.rejected, 2);
	/* The cumulative ack covers the gaps. */
	assert_int_equal(queue__ack(&q, 1, 4), 2);
	assert_int_equal(q.n_msgs, 0);
	assert_int_equal(q.queued, q.acked + q.rejected);
	queue__free(&q);
}

static void byte_bound_random_walk(void **state)
{
	(void)state;
	struct queue q;
	queue__init(&q, 20000);
	srand(42);
	uint64_t next_stream = 1, steps = 0, self_dropped = 0;
	for (int i = 0; i < 20000; i++) {
		int op = rand() % 10;
		uint64_t id = 1 + (uint64_t)rand() % next_stream;
		if (op == 0 && next_stream < 6) {
			push(&q, QUEUE_RUN_START, next_stream++, 0, 0);
		} else if (op < 6) {
			if (push(&q, QUEUE_STEP, id, steps++, (size_t)(rand() % 8)) == QUEUE_DROPPED)
				self_dropped++;
		} else if (op == 6) {
			push(&q, QUEUE_EPOCH, id, steps, 0);
		} else if (op == 7) {
			struct iovec iov[16];
			struct queue_oversize over = {0};
			size_t n = queue__batch(&q, SIZE_MAX, iov, 16, SIZE_MAX, &over);
			size_t bytes = 0;
			for (size_t k = 0; k < n; k++)
				bytes += iov[k].iov_len;
			queue__advance(&q, bytes ? (size_t)rand() % (bytes + 1) : 0);
		} else if (op == 8) {
			queue__ack(&q, id, (uint64_t)rand() % 200);
		} else if (rand() % 20 == 0) {
			queue__rewind(&q);
		}
		assert_true(q.bytes <= q.max_bytes);
		assert_true(q.droppable_bytes <= q.bytes);
	}
	assert_true(q.dropped > self_dropped);
	assert_int_equal(q.queued, q.n_msgs + q.acked + q.rejected + (q.dropped - self_dropped));
	queue__free(&q);
}

/* Several producers queue while a writer thread "sends" without the lock
 * (reading the frames as the real I/O thread does), acknowledges, rejects
 * and reconnects now and then. Under ASan/TSan this also checks that no
 * frame is freed while the writer holds it. */
#define N_PRODUCERS 4
#define N_STEPS 6000
#define EPOCH_EVERY 1000
#define MAX_SEQ (N_STEPS + N_STEPS / EPOCH_EVERY + 3)

struct shared {
	pthread_mutex_t lock;
	struct queue q;
	int producers_left;
};

struct producer {
	struct shared *sh;
	uint64_t stream;
	uint64_t pushed, self_dropped;
	/* What went wrong, checked by the main thread: cmocka's assertions
	 * must not fire in other threads. */
	const char *failure;
	int failure_rv;
};

struct stream_seen {
	uint64_t stream;
	uint8_t seen[MAX_SEQ + 1];
	uint64_t dropped_at[MAX_SEQ + 1];
	uint64_t max_seq, unique, end_dropped;
	bool ended;
};

static void *producer_main(void *arg)
{
	struct producer *p = arg;
	struct shared *sh = p->sh;
	for (uint64_t i = 0; i < N_STEPS + 2 + N_STEPS / EPOCH_EVERY; i++) {
		enum queue_kind kind = QUEUE_STEP;
		if (i == 0)
			kind = QUEUE_RUN_START;
		else if (i == N_STEPS + 1 + N_STEPS / EPOCH_EVERY)
			kind = QUEUE_RUN_END;
		else if (i % EPOCH_EVERY == 0)
			kind = QUEUE_EPOCH;
		pthread_mutex_lock(&sh->lock);
		int rv = push(&sh->q, kind, p->stream, i, i % 5);
		if (rv == QUEUE_DROPPED)
			p->self_dropped++;
		/* No step is dropped for the others: a queue full of what cannot
		 * be dropped refuses them until the writer makes room. */
		if (kind != QUEUE_STEP && rv == -ENOBUFS) {
			pthread_mutex_unlock(&sh->lock);
			i--;
			continue;
		}
		if (rv < 0 || (kind != QUEUE_STEP && rv != QUEUE_QUEUED))
			p->failure = "push failed";
		else if (sh->q.bytes > sh->q.max_bytes)
			p->failure = "byte bound exceeded";
		if (p->failure != NULL) {
			p->failure_rv = rv;
			sh->producers_left--;
			pthread_mutex_unlock(&sh->lock);
			return NULL;
		}
		p->pushed++;
		pthread_mutex_unlock(&sh->lock);
	}
	pthread_mutex_lock(&sh->lock);
	sh->producers_left--;
	pthread_mutex_unlock(&sh->lock);
	return NULL;
}

static struct stream_seen *find_seen(struct stream_seen *seen, uint64_t stream)
{
	for (int i = 0; i < N_PRODUCERS; i++)
		if (seen[i].stream == stream)
			return &seen[i];
	fail_msg("frame of unknown stream %llu", (unsigned long long)stream);
	return NULL;
}

static void writer(struct shared *sh, struct stream_seen *seen)
{
	static uint8_t wire[1 << 20];
	size_t wire_len = 0;
	unsigned seed = 7;
	for (;;) {
		struct iovec iov[64];
		struct queue_oversize over = {0};
		pthread_mutex_lock(&sh->lock);
		size_t n = queue__batch(&sh->q, SIZE_MAX, iov, 64, 64 * 1024, &over);
		bool done = n == 0 && sh->producers_left == 0 && sh->q.n_msgs == 0;
		pthread_mutex_unlock(&sh->lock);
		if (done)
			break;
		/* "Send" part of the batch without the lock. */
		size_t total = 0;
		for (size_t i = 0; i < n; i++)
			total += iov[i].iov_len;
		size_t w = total > 0 ? 1 + (size_t)rand_r(&seed) % total : 0;
		size_t left = w;
		for (size_t i = 0; i < n && left > 0; i++) {
			size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
			assert_true(wire_len + k <= sizeof wire);
			memcpy(wire + wire_len, iov[i].iov_base, k);
			wire_len += k;
			left -= k;
		}
		/* The "daemon" reads whole frames. */
		size_t off = 0;
		uint32_t payload;
		while (frame__scan(wire + off, wire_len - off, FRAME_MAX_LIMIT, &payload) == FRAME_READY) {
			struct iovec one = {wire + off, FRAME_HEADER_BYTES + payload};
			struct seen s;
			decode(&one, 1, &s, 1);
			struct stream_seen *ss = find_seen(seen, s.stream);
			assert_true(s.seq <= MAX_SEQ);
			if (!ss->seen[s.seq]) {
				ss->seen[s.seq] = 1;
				ss->unique++;
			}
			if (s.kind == DNNFAULT__ENVELOPE__BODY_STEP ||
			    s.kind == DNNFAULT__ENVELOPE__BODY_RUN_END)
				ss->seen[s.seq] = 2;	/* carries a drop count */
			ss->dropped_at[s.seq] = s.dropped;
			if (s.seq > ss->max_seq)
				ss->max_seq = s.seq;
			if (s.kind == DNNFAULT__ENVELOPE__BODY_RUN_END) {
				ss->ended = true;
				ss->end_dropped = s.dropped;
			}
			off += FRAME_HEADER_BYTES + payload;
		}
		memmove(wire, wire + off, wire_len - off);
		wire_len -= off;

		pthread_mutex_lock(&sh->lock);
		queue__advance(&sh->q, w);
		int what = rand_r(&seed) % 50;
		for (int i = 0; i < N_PRODUCERS; i++)
			if (seen[i].max_seq > 0 && what < 40)
				queue__ack(&sh->q, seen[i].stream, seen[i].max_seq - (what % 3));
		if (what == 45)
			queue__reject(&sh->q, seen[0].stream, seen[0].max_seq);
		if (what == 49) {
			queue__rewind(&sh->q);	/* "reconnect": the partial frame is lost */
			wire_len = 0;
		}
		pthread_mutex_unlock(&sh->lock);
	}
}

static void concurrent_producers(void **state)
{
	(void)state;
	struct shared sh = {.producers_left = N_PRODUCERS};
	pthread_mutex_init(&sh.lock, NULL);
	queue__init(&sh.q, 256 * 1024);
	static struct stream_seen seen[N_PRODUCERS];
	memset(seen, 0, sizeof seen);
	struct producer p[N_PRODUCERS];
	pthread_t t[N_PRODUCERS];
	for (int i = 0; i < N_PRODUCERS; i++) {
		p[i] = (struct producer){.sh = &sh, .stream = 100 + (uint64_t)i};
		seen[i].stream = p[i].stream;
		pthread_create(&t[i], NULL, producer_main, &p[i]);
	}
	writer(&sh, seen);
	for (int i = 0; i < N_PRODUCERS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < N_PRODUCERS; i++)
		if (p[i].failure != NULL)
			fail_msg("producer %d: %s (%d)", i, p[i].failure, p[i].failure_rv);

	uint64_t total_dropped = 0, total_pushed = 0;
	for (int i = 0; i < N_PRODUCERS; i++) {
		struct stream_seen *ss = &seen[i];
		assert_true(ss->ended);
		assert_true(ss->seen[1]);	/* the run start */
		/* Every message arrived or was counted as dropped, once. */
		assert_int_equal(ss->unique + ss->end_dropped, p[i].pushed);
		/* The drop counts the frames carry never go down. */
		uint64_t last = 0;
		for (uint64_t seq = 1; seq <= ss->max_seq; seq++) {
			if (ss->seen[seq] != 2)
				continue;
			assert_true(ss->dropped_at[seq] >= last);
			last = ss->dropped_at[seq];
		}
		total_dropped += ss->end_dropped;
		total_pushed += p[i].pushed;
	}
	struct queue *q = &sh.q;
	assert_int_equal(q->n_msgs, 0);
	assert_int_equal(q->bytes, 0);
	assert_null(q->streams);
	assert_int_equal(q->dropped, total_dropped);
	assert_true(q->dropped > 0);
	assert_int_equal(q->acked + q->rejected + q->dropped, total_pushed);
	print_message("%llu messages: %llu acknowledged, %llu rejected, %llu dropped, %llu writes\n",
		      (unsigned long long)total_pushed, (unsigned long long)q->acked,
		      (unsigned long long)q->rejected, (unsigned long long)q->dropped,
		      (unsigned long long)q->sent);
	queue__free(q);
	pthread_mutex_destroy(&sh.lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(order_ack_and_resend),
		cmocka_unit_test(partial_writes_and_unwritten_frames),
		cmocka_unit_test(acks_per_stream),
		cmocka_unit_test(drop_oldest_unsent_steps),
		cmocka_unit_test(nothing_droppable),
		cmocka_unit_test(run_end_keeps_its_steps),
		cmocka_unit_test(rejected_and_oversize),
		cmocka_unit_test(byte_bound_random_walk),
		cmocka_unit_test(concurrent_producers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
