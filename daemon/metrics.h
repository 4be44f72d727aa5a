/* Counters of the daemon, readable through the control protocol
 * (dnnfaultctl stats) and the Prometheus endpoint (metrics_http.h).
 * Updated on the event-loop thread only. */
#ifndef DNNFAULT_METRICS_H
#define DNNFAULT_METRICS_H

#include <stdint.h>

#define METRICS_COUNTERS(X)                                                                      \
	X(connections_accepted, "connections accepted on the socket and TCP listeners")                 \
	X(connections_open, "connections open now")                                                     \
	X(connections_rejected, "connections refused (max_connections, open-file limit)")               \
	X(connections_slow_reader, "connections dropped because they did not read their replies")       \
	X(handshake_timeouts, "connections closed for sending no Hello in time")                        \
	X(frames_received, "frames received")                                                           \
	X(bytes_received, "bytes received from clients")                                                \
	X(messages_accepted, "messages accepted")                                                       \
	X(messages_duplicate, "messages already stored (resent after a reconnect), acknowledged again") \
	X(messages_rejected, "messages refused with an error")                                          \
	X(runs_started, "runs started (RunStart stored)")                                               \
	X(steps_stored, "sampled steps stored")                                                         \
	X(epochs_stored, "epoch summaries stored")                                                      \
	X(runs_ended, "run ends stored")                                                                \
	X(commits, "store transactions committed")                                                      \
	X(commit_failures, "store transactions that failed")                                            \
	X(reads_paused, "times reading paused because commits fell behind")                             \
	X(control_requests, "control requests (dnnfaultctl)")                                           \
	X(metrics_requests, "scrapes of the Prometheus endpoint answered from the store")               \
	X(analyses, "analyses of runs (features, symptoms, diagnosis)")                                 \
	X(analysis_failures, "analyses that failed")                                                    \
	X(analysis_micros, "time spent in analyses, microseconds")                                      \
	X(model_loads, "diagnosis model bundles loaded")                                                \
	X(model_load_failures, "diagnosis model bundles that failed to load")                           \
	X(errors_bad_frame, "error replies: bad frame")                                                 \
	X(errors_frame_too_large, "error replies: frame too large")                                     \
	X(errors_bad_message, "error replies: bad message")                                             \
	X(errors_version, "error replies: version")                                                     \
	X(errors_auth, "error replies: auth")                                                           \
	X(errors_handshake_required, "error replies: handshake required")                               \
	X(errors_unknown_message, "error replies: unknown message")                                     \
	X(errors_unknown_stream, "error replies: unknown stream")                                       \
	X(errors_invalid_field, "error replies: invalid field")                                         \
	X(errors_limit, "error replies: limit")                                                         \
	X(errors_role, "error replies: role")                                                           \
	X(errors_timeout, "error replies: timeout")                                                     \
	X(errors_slow_reader, "error replies: slow reader")                                             \
	X(errors_shutting_down, "error replies: shutting down")                                         \
	X(errors_no_such_run, "error replies: no such run")                                             \
	X(errors_internal, "error replies: internal")                                                   \
	X(errors_ambiguous_run, "error replies: ambiguous run")

struct metrics {
#define METRICS_FIELD(name, help) uint64_t name;
	METRICS_COUNTERS(METRICS_FIELD)
#undef METRICS_FIELD
};

extern struct metrics metrics;

/* Counts an error reply by its protocol error code. */
void metrics__count_error(int code);

/* Calls fn for every counter of `m` (a snapshot, or &metrics), in
 * declaration order, with its one-line description. */
void metrics__each(const struct metrics *m,
		   void (*fn)(const char *name, const char *help, uint64_t value, void *arg), void *arg);

#endif
