/* Counters of the daemon, readable through the control protocol
 * (dnnfaultctl stats). Updated on the event-loop thread only. */
#ifndef DNNFAULT_METRICS_H
#define DNNFAULT_METRICS_H

#include <stdint.h>

#define METRICS_COUNTERS(X)            \
	X(connections_accepted)        \
	X(connections_open)            \
	X(connections_rejected)        \
	X(connections_slow_reader)     \
	X(handshake_timeouts)          \
	X(frames_received)             \
	X(bytes_received)              \
	X(messages_accepted)           \
	X(messages_duplicate)          \
	X(messages_rejected)           \
	X(runs_started)                \
	X(steps_stored)                \
	X(epochs_stored)               \
	X(runs_ended)                  \
	X(commits)                     \
	X(commit_failures)             \
	X(reads_paused)                \
	X(control_requests)            \
	X(analyses)                    \
	X(analysis_failures)           \
	X(analysis_micros)             \
	X(model_loads)                 \
	X(model_load_failures)         \
	X(errors_bad_frame)            \
	X(errors_frame_too_large)      \
	X(errors_bad_message)          \
	X(errors_version)              \
	X(errors_auth)                 \
	X(errors_handshake_required)   \
	X(errors_unknown_message)      \
	X(errors_unknown_stream)       \
	X(errors_invalid_field)        \
	X(errors_limit)                \
	X(errors_role)                 \
	X(errors_timeout)              \
	X(errors_slow_reader)          \
	X(errors_shutting_down)        \
	X(errors_no_such_run)          \
	X(errors_internal)             \
	X(errors_ambiguous_run)

struct metrics {
#define METRICS_FIELD(name) uint64_t name;
	METRICS_COUNTERS(METRICS_FIELD)
#undef METRICS_FIELD
};

extern struct metrics metrics;

/* Counts an error reply by its protocol error code. */
void metrics__count_error(int code);

/* Calls fn for every counter, in declaration order. */
void metrics__each(void (*fn)(const char *name, uint64_t value, void *arg), void *arg);

#endif
