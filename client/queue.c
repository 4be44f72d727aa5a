#include "queue.h"

#include <errno.h>
#include <stdlib.h>

/* Re-encoding with a larger drop count can grow a varint by this much. */
#define QUEUE_VARINT_SLACK 9

void queue__init(struct queue *q, size_t max_bytes)
{
	*q = (struct queue){.max_bytes = max_bytes};
}

void queue__free(struct queue *q)
{
	for (struct queue_msg *m = q->head, *next; m != NULL; m = next) {
		next = m->next;
		free(m->buf);
		free(m);
	}
	for (struct queue_stream *s = q->streams, *next; s != NULL; s = next) {
		next = s->next;
		free(s);
	}
	queue__init(q, q->max_bytes);
}

struct queue_stream *queue__stream(const struct queue *q, uint64_t id)
{
	for (struct queue_stream *s = q->streams; s != NULL; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

static void queue__forget_stream(struct queue *q, struct queue_stream *s)
{
	for (struct queue_stream **p = &q->streams; *p != NULL; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	free(s);
}

/* Steps of an ended stream stay, so that its RunEnd's drop count is final. */
static bool queue__droppable(const struct queue_msg *m)
{
	return m->kind == QUEUE_STEP && !m->claimed && !m->stream->ended;
}

/* Unlinks and frees one message; an ended stream goes with its last one. */
static void queue__remove(struct queue *q, struct queue_msg *m)
{
	if (m == q->cursor) {
		q->cursor = m->next;
		q->cursor_off = 0;
	}
	if (m == q->unclaimed)
		q->unclaimed = m->next;
	*(m->prev ? &m->prev->next : &q->head) = m->next;
	*(m->next ? &m->next->prev : &q->tail) = m->prev;

	struct queue_stream *s = m->stream;
	*(m->s_prev ? &m->s_prev->s_next : &s->head) = m->s_next;
	*(m->s_next ? &m->s_next->s_prev : &s->tail) = m->s_prev;

	q->bytes -= m->len + QUEUE_MSG_OVERHEAD;
	q->n_msgs--;
	if (queue__droppable(m))
		q->droppable_bytes -= m->len + QUEUE_MSG_OVERHEAD;
	free(m->buf);
	free(m);
	if (s->ended && s->head == NULL)
		queue__forget_stream(q, s);
}

/* Drops the oldest step never handed to the writer; the caller made sure
 * there is one (droppable_bytes > 0). */
static void queue__drop_oldest(struct queue *q)
{
	struct queue_msg *m = q->unclaimed;
	while (m != NULL && !queue__droppable(m))
		m = m->next;
	if (m == NULL)
		abort();	/* droppable_bytes disagrees with the list */
	m->stream->dropped++;
	q->dropped++;
	queue__remove(q, m);
}

int queue__push(struct queue *q, uint64_t id, enum queue_kind kind,
		queue_encode_fn enc, void *arg)
{
	struct queue_stream *s = queue__stream(q, id);
	struct queue_stream *fresh = NULL;
	if (kind == QUEUE_RUN_START) {
		if (s != NULL)
			return -EEXIST;
		fresh = s = calloc(1, sizeof *s);
		if (s == NULL)
			return -ENOMEM;
		s->id = id;
		s->next_seq = 1;
	} else if (s == NULL || s->ended) {
		return -ENOENT;
	}

	int rv;
	struct encode_frame f = {0};
	struct queue_msg *m = calloc(1, sizeof *m);
	if (m == NULL) {
		rv = -ENOMEM;
		goto err;
	}
	uint64_t dropped = s->dropped;
	rv = enc(arg, s->next_seq, dropped, &f);
	if (rv < 0)
		goto err;
	bool counts = kind == QUEUE_STEP || kind == QUEUE_RUN_END;
	size_t need = f.len + QUEUE_MSG_OVERHEAD + (counts ? QUEUE_VARINT_SLACK : 0);
	if (need > q->max_bytes) {
		rv = -EINVAL;
		goto err;
	}
	if (q->bytes - q->droppable_bytes + need > q->max_bytes) {
		if (kind != QUEUE_STEP) {
			rv = -ENOBUFS;
			goto err;
		}
		/* Nothing older may go: the new step is the one dropped. */
		s->dropped++;
		q->dropped++;
		encode__free(&f);
		free(m);
		return QUEUE_DROPPED;
	}
	while (q->bytes + need > q->max_bytes)
		queue__drop_oldest(q);
	if (counts && s->dropped != dropped) {
		encode__free(&f);
		rv = enc(arg, s->next_seq, s->dropped, &f);
		if (rv < 0)
			goto err;
	}

	if (fresh != NULL) {
		fresh->next = q->streams;
		q->streams = fresh;
	}
	m->stream = s;
	m->seq = s->next_seq++;
	m->ticket = ++q->next_ticket;
	m->kind = kind;
	m->buf = f.buf;
	m->len = f.len;
	m->prev = q->tail;
	*(q->tail ? &q->tail->next : &q->head) = m;
	q->tail = m;
	m->s_prev = s->tail;
	*(s->tail ? &s->tail->s_next : &s->head) = m;
	s->tail = m;
	if (q->cursor == NULL)
		q->cursor = m;
	if (q->unclaimed == NULL)
		q->unclaimed = m;
	q->bytes += m->len + QUEUE_MSG_OVERHEAD;
	if (queue__droppable(m))
		q->droppable_bytes += m->len + QUEUE_MSG_OVERHEAD;
	q->n_msgs++;
	q->queued++;
	if (kind == QUEUE_RUN_END) {
		for (struct queue_msg *x = s->head; x != NULL; x = x->s_next)
			if (queue__droppable(x))
				q->droppable_bytes -= x->len + QUEUE_MSG_OVERHEAD;
		s->ended = true;
	}
	return QUEUE_QUEUED;

err:
	encode__free(&f);
	free(m);
	free(fresh);
	return rv;
}

size_t queue__batch(struct queue *q, size_t max_frame, struct iovec *iov,
		    size_t max_iov, size_t max_bytes, struct queue_oversize *over)
{
	size_t n = 0, total = 0;
	size_t off = q->cursor_off;
	for (struct queue_msg *m = q->cursor, *next; m != NULL && n < max_iov && total < max_bytes;
	     m = next) {
		next = m->next;
		if (off == 0 && m->len > max_frame) {
			over->n++;
			over->stream = m->stream->id;
			over->seq = m->seq;
			over->len = m->len;
			q->rejected++;
			queue__remove(q, m);
			continue;
		}
		if (!m->claimed) {
			if (queue__droppable(m))
				q->droppable_bytes -= m->len + QUEUE_MSG_OVERHEAD;
			m->claimed = true;
		}
		if (m == q->unclaimed)
			q->unclaimed = next;
		iov[n].iov_base = m->buf + off;
		iov[n].iov_len = m->len - off;
		total += iov[n].iov_len;
		n++;
		off = 0;
	}
	return n;
}

void queue__advance(struct queue *q, size_t n)
{
	while (n > 0 && q->cursor != NULL) {
		size_t left = q->cursor->len - q->cursor_off;
		if (n < left) {
			q->cursor_off += n;
			return;
		}
		n -= left;
		q->cursor->done = true;
		q->sent++;
		q->cursor = q->cursor->next;
		q->cursor_off = 0;
	}
}

size_t queue__ack(struct queue *q, uint64_t stream, uint64_t seq)
{
	struct queue_stream *s = queue__stream(q, stream);
	size_t n = 0;
	/* Written frames are a prefix of each stream's list. */
	for (struct queue_msg *m = s ? s->head : NULL, *next; m != NULL && m->seq <= seq && m->done;
	     m = next) {
		next = m->s_next;
		queue__remove(q, m);
		n++;
	}
	q->acked += n;
	return n;
}

int queue__reject(struct queue *q, uint64_t stream, uint64_t seq)
{
	struct queue_stream *s = queue__stream(q, stream);
	for (struct queue_msg *m = s ? s->head : NULL; m != NULL && m->seq <= seq; m = m->s_next)
		if (m->seq == seq && m->done) {
			q->rejected++;
			queue__remove(q, m);
			return 1;
		}
	return 0;
}

void queue__rewind(struct queue *q)
{
	for (struct queue_msg *m = q->head; m != NULL; m = m->next)
		m->done = false;
	q->cursor = q->head;
	q->cursor_off = 0;
}

bool queue__pending(const struct queue *q)
{
	return q->cursor != NULL;
}

uint64_t queue__last_ticket(const struct queue *q)
{
	return q->next_ticket;
}

bool queue__settled(const struct queue *q, uint64_t ticket)
{
	return q->head == NULL || q->head->ticket > ticket;
}
