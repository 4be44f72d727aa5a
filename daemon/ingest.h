/* Ingest: turns validated telemetry into store batches, commits them on a
 * worker thread (one writer at a time), and acknowledges each message only
 * after its commit. Knows every stream and run in memory so that duplicates
 * (resent messages) are recognised without reading the store. */
#ifndef DNNFAULT_INGEST_H
#define DNNFAULT_INGEST_H

#include <stdbool.h>

#include "dnnfault.pb-c.h"

struct conn;
struct server;
struct ingest;

/* Loads the known runs and streams from the store. Returns 0 or a negative
 * errno. */
int ingest__init(struct ingest **out, struct server *srv);
void ingest__free(struct ingest *ig);

/* Accepts one trainer message (RunStart, Step, Epoch or RunEnd) of `c`;
 * answers with an Error when it is rejected. Does not keep `env`. */
void ingest__message(struct ingest *ig, struct conn *c, const Dnnfault__Envelope *env);

/* Stores an analysis result with the next commit; takes `message`. */
void ingest__add_diagnosis(struct ingest *ig, int64_t run, uint64_t step, const char *health,
			   uint8_t *message, size_t len);

/* Stores new labels of a run with the next commit, then calls done(arg, rv)
 * with 0 or -EIO. Takes `labels` (malloc'd comma list, "" for healthy). */
void ingest__set_labels(struct ingest *ig, int64_t run, char *labels,
			void (*done)(void *arg, int rv), void *arg);

/* Stores a new reference run of a run with the next commit, then calls
 * done(arg, rv) with 0 or -EIO. Takes `reference` (malloc'd name or id;
 * NULL clears it). */
void ingest__set_reference(struct ingest *ig, int64_t run, char *reference,
			   void (*done)(void *arg, int rv), void *arg);

/* Starts a commit if none is running and something waits. */
void ingest__kick(struct ingest *ig);

/* Asks for runs that ended before `before` to be deleted in the next commit. */
void ingest__prune(struct ingest *ig, double before);

/* True while nothing is waiting for or in a commit. */
bool ingest__idle(const struct ingest *ig);

/* Called after each commit while the server drains for shutdown. */
void ingest__on_idle(struct ingest *ig, void (*cb)(void *arg), void *arg);

#endif
