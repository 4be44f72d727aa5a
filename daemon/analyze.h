/* Live analysis: once a run has enough new committed steps (or ends), its
 * telemetry is loaded on a worker thread, the detectors run, and the
 * resulting Diagnosis is handed to ingest to be stored with the next commit.
 * One analysis at a time, so that analysis never competes with more than
 * one core's worth of the writer and the loop. */
#ifndef DNNFAULT_ANALYZE_H
#define DNNFAULT_ANALYZE_H

#include <stdbool.h>
#include <stdint.h>

struct server;
struct analyze;

int analyze__init(struct analyze **out, struct server *srv);
/* Closes the timer; call before the loop's last run. */
void analyze__stop(struct analyze *a);
void analyze__free(struct analyze *a);

/* A commit stored `new_steps` steps of `run`, or its end. */
void analyze__note(struct analyze *a, int64_t run, uint64_t new_steps, bool ended);

#endif
