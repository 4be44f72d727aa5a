/* The training set: feature rows of labelled runs at several points of
 * their progress, so that the models learn to diagnose early. Built from a
 * store (the same loader and feature code as live diagnosis) or read back
 * from the CSV export that is committed with the corpus. Each row also
 * carries what the baselines conclude at that point, so the evaluation
 * compares everything on the very same rows. */
#ifndef DNNFAULT_DATASET_H
#define DNNFAULT_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "baselines.h"
#include "causes.h"

#define DATASET_POINTS 4
extern const double dataset_points[DATASET_POINTS];	/* 0.10 0.25 0.50 1.00 */

enum baseline { BASE_AUTOTRAINER, BASE_DEEPDIAGNOSIS, BASE_UMLAUT, BASE_COUNT };
extern const char *const baseline_names[BASE_COUNT];

struct row_meta {
	int64_t run;		/* store id */
	int group;		/* index into dataset.groups: the base program */
	int point;		/* index into dataset_points */
	cause_set labels;	/* 0 = healthy */
	int64_t reference;	/* the run compared with, 0 = none (dataset__set_references) */
	cause_set base[BASE_COUNT];
};

struct dataset {
	size_t n, cap;
	size_t n_features;	/* features__count() */
	double *x;		/* n x n_features */
	double *fd;		/* n x DEEPFD_FEATURES */
	struct row_meta *meta;
	char **groups;
	size_t n_groups;
};

/* Rows of every labelled run in the store at `db`. A run's group is its
 * name up to the first '-' (corpus names are "<program>-<config>-s<seed>").
 * A run that names a reference run in the store (runs.reference) is
 * compared with it, as the daemon compares them; dataset__set_references
 * replaces that. Returns 0 or a negative errno with `err` set. */
int dataset__from_store(const char *db, struct dataset *d, char *err, size_t len);

/* CSV with a header naming every column; read refuses another schema. */
int dataset__write_csv(const struct dataset *d, FILE *f);
int dataset__read_csv(FILE *f, struct dataset *d, char *err, size_t len);

/* Gives each row a reference run, from a CSV of "program,run" lines
 * (an optional header "program,run"): the runs listed for a program are
 * its known-healthy references, and each row of that program is compared
 * with one of them other than itself (picked by run id, so one run keeps
 * one reference at every point), at the same point of progress; the
 * reference block of its features is filled (features__apply_reference).
 * Programs and runs the rows lack are ignored. Call after loading. */
int dataset__set_references(struct dataset *d, FILE *f, char *err, size_t len);

/* A cause set as the CSV writes it: names joined by '|' ("" if healthy). */
void dataset__write_set(FILE *f, cause_set set);

void dataset__free(struct dataset *d);

#endif
