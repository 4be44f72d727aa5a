/* Live analysis: once a run has enough new committed steps (or ends), its
 * telemetry is loaded on a worker thread, the detectors run, and the
 * resulting Diagnosis is handed to ingest to be stored with the next commit.
 * One analysis at a time, so that analysis never competes with more than
 * one core's worth of the writer and the loop. */
#ifndef DNNFAULT_ANALYZE_H
#define DNNFAULT_ANALYZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct analyze;

int analyze__init(struct analyze **out, struct server *srv);
/* Closes the timer; call before the loop's last run. */
void analyze__stop(struct analyze *a);
void analyze__free(struct analyze *a);

struct model;

/* The bundle path the configuration names: `model` when set, else the
 * installed default bundle, else the source tree's (running from a build
 * directory); "" when `model` is "none". Into buf; returns buf. */
const char *analyze__model_path(const struct analyze *a, char *buf, size_t len);

/* Loads the configured bundle (blocking: at start-up, or on a worker).
 * Returns 0, or a negative errno with err set. */
int analyze__load_model(const struct analyze *a, struct model **out, char *err, size_t len);

/* Puts a bundle in use (NULL: none); the old one is freed once the
 * analysis in flight is done with it. */
void analyze__set_model(struct analyze *a, struct model *m);

const struct model *analyze__model(const struct analyze *a);

/* Queues an analysis of `run` now, whatever its progress (a run that is
 * not being followed gets one analysis, then is forgotten again). */
void analyze__request(struct analyze *a, int64_t run);

/* A commit stored `new_steps` steps of `run`, or its end. */
void analyze__note(struct analyze *a, int64_t run, uint64_t new_steps, bool ended);

#endif
