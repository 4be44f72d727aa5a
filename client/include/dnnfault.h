/* dnnfault client library: streams training telemetry to dnnfaultd.
 *
 * This is the synchronous core: calls write to the socket and may block
 * while the kernel buffer is full. The wire format stays inside the library;
 * callers see plain C structs. All functions return 0 (or a non-negative
 * value where stated) on success and a negative errno value on failure;
 * dnnfault_conn_error() then holds a message for the user. */
#ifndef DNNFAULT_H
#define DNNFAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DNNFAULT_STATS_PER_LAYER 16

/* Order of the per-layer statistics in dnnfault_step.layer_stats. */
enum dnnfault_layer_stat {
	DNNFAULT_WEIGHT_NORM, DNNFAULT_WEIGHT_MEAN, DNNFAULT_WEIGHT_STD, DNNFAULT_WEIGHT_MAX_ABS,
	DNNFAULT_GRAD_NORM, DNNFAULT_GRAD_MEAN, DNNFAULT_GRAD_STD, DNNFAULT_GRAD_MAX_ABS,
	DNNFAULT_GRAD_ZERO_FRAC, DNNFAULT_UPDATE_RATIO,
	DNNFAULT_ACT_MEAN, DNNFAULT_ACT_STD, DNNFAULT_ACT_NONPOS_FRAC, DNNFAULT_ACT_SATURATED_FRAC,
	DNNFAULT_NAN_COUNT, DNNFAULT_INF_COUNT,
};

enum dnnfault_role { DNNFAULT_ROLE_TRAINER = 1, DNNFAULT_ROLE_CONTROL = 2 };
enum dnnfault_task { DNNFAULT_TASK_UNKNOWN = 0, DNNFAULT_TASK_CLASSIFICATION = 1, DNNFAULT_TASK_REGRESSION = 2 };
enum dnnfault_end_status {
	DNNFAULT_END_COMPLETED = 1, DNNFAULT_END_CRASHED = 2, DNNFAULT_END_INTERRUPTED = 3,
};

typedef struct dnnfault_conn dnnfault_conn;

struct dnnfault_kv {
	const char *key;
	const char *value;	/* may be NULL when only `number` is meaningful */
	double number;
	bool has_number;
};

struct dnnfault_shape {
	const char *name;	/* "weight", "bias", ... */
	const uint64_t *dims;
	size_t n_dims;
};

struct dnnfault_layer {
	const char *name;
	const char *type;	/* NULL when unknown */
	const char *activation;
	uint64_t param_count;
	uint64_t trainable_count;
	/* None of its parameters is trainable (requires_grad off: a frozen
	 * layer); trainable_count's 0 would read as "not given". */
	bool frozen;
	const struct dnnfault_shape *params;
	size_t n_params;
};

/* Static description of one rank of a run. NULL strings and zero counts
 * are "not given". */
struct dnnfault_run_info {
	const char *run_id;	/* required; shared by all ranks of the run */
	const char *run_name;
	uint32_t rank, world_size;
	const char *host;
	uint32_t pid;
	const char *framework, *framework_version;
	enum dnnfault_task task;
	uint32_t num_classes;
	const struct dnnfault_layer *layers;
	size_t n_layers;
	const char *loss_fn;
	const char *optimizer;
	const struct dnnfault_kv *optimizer_params;
	size_t n_optimizer_params;
	uint32_t batch_size, planned_epochs;
	uint64_t planned_steps, dataset_size;
	const struct dnnfault_kv *tags;
	size_t n_tags;
	const char *const *labels;	/* ground-truth root causes */
	size_t n_labels;
	bool labels_known;
	/* An earlier, healthy run of the same program (name or id) for the
	 * daemon to compare this run with. */
	const char *reference;
};

/* Which optional values of a step, epoch or run end are present. NaN and
 * Inf are legal values; absence is said here. */
enum dnnfault_has {
	DNNFAULT_HAS_LOSS = 1 << 0,
	DNNFAULT_HAS_ACCURACY = 1 << 1,
	DNNFAULT_HAS_LR = 1 << 2,
	DNNFAULT_HAS_INPUT = 1 << 3,	/* input_mean/std/min/max */
	DNNFAULT_HAS_TRAIN_LOSS = 1 << 4,
	DNNFAULT_HAS_TRAIN_METRIC = 1 << 5,
	DNNFAULT_HAS_VAL_LOSS = 1 << 6,
	DNNFAULT_HAS_VAL_METRIC = 1 << 7,
};

struct dnnfault_step {
	uint64_t step;
	double time;		/* unix seconds; 0 means "now" */
	unsigned has;		/* dnnfault_has bits */
	double loss, accuracy, lr;
	double input_mean, input_std, input_min, input_max;
	const float *layer_stats;	/* n_layers * DNNFAULT_STATS_PER_LAYER */
	size_t n_layers;
	uint64_t dropped;	/* caller's cumulative count of dropped steps */
};

struct dnnfault_epoch {
	uint32_t epoch;
	uint64_t step;
	unsigned has;
	double train_loss, train_metric, val_loss, val_metric;
};

struct dnnfault_run_end {
	enum dnnfault_end_status status;
	uint64_t step;
	unsigned has;
	double train_loss, train_metric, val_loss, val_metric;
	uint64_t dropped;
};

/* One rank of one run as this process reports it. */
struct dnnfault_stream {
	uint64_t id;		/* random, nonzero */
	uint64_t next_seq;	/* sequence number of the next message */
	uint64_t acked_seq;	/* highest acknowledged sequence number */
	/* Set by dnnfault_poll when the daemon refused the stream's RunStart or
	 * answered that it does not know the stream: nothing more of it will
	 * be acknowledged. `refusal` holds the RunStart's error, if read. */
	bool refused;
	char refusal[128];
};

/* The daemon's error codes (proto/dnnfault.proto, ErrorCode; docs/protocol.md,
 * Errors), for callers that do not include the generated protobuf header. */
enum dnnfault_error_code {
	DNNFAULT_ERR_NONE = 0,
	DNNFAULT_ERR_BAD_FRAME = 1,
	DNNFAULT_ERR_FRAME_TOO_LARGE = 2,
	DNNFAULT_ERR_BAD_MESSAGE = 3,
	DNNFAULT_ERR_VERSION = 4,
	DNNFAULT_ERR_AUTH = 5,
	DNNFAULT_ERR_HANDSHAKE_REQUIRED = 6,
	DNNFAULT_ERR_UNKNOWN_MESSAGE = 7,
	DNNFAULT_ERR_UNKNOWN_STREAM = 8,
	DNNFAULT_ERR_INVALID_FIELD = 9,
	DNNFAULT_ERR_LIMIT = 10,
	DNNFAULT_ERR_ROLE = 11,
	DNNFAULT_ERR_TIMEOUT = 12,
	DNNFAULT_ERR_SLOW_READER = 13,
	DNNFAULT_ERR_SHUTTING_DOWN = 14,
	DNNFAULT_ERR_NO_SUCH_RUN = 15,
	DNNFAULT_ERR_INTERNAL = 16,
	DNNFAULT_ERR_AMBIGUOUS_RUN = 17,
};

/* The last error the daemon reported about a message of ours. */
struct dnnfault_reply_error {
	int code;		/* enum dnnfault_error_code */
	uint64_t stream, seq;
	bool fatal;
	char message[256];
};

/* Connects to `address` ("unix:/path", "tcp://host:port"; NULL for
 * $DNNFAULT_ADDRESS or the daemon's default) and performs the handshake.
 * `token` may be NULL for $DNNFAULT_TOKEN (or none). timeout_ms bounds the
 * connect and the wait for the daemon's answer (-1: no bound). On failure
 * returns NULL, writes a message to err when it is not NULL, and stores a
 * negative errno in *errnum when it is not NULL: -EINVAL for a bad address;
 * -EACCES (token refused), -EPROTONOSUPPORT (protocol version) or -EPROTO
 * (any other refusal) when the daemon answered; anything else (-ENOENT,
 * -ECONNREFUSED, -ETIMEDOUT, -EPIPE, ...) means it is unreachable. */
dnnfault_conn *dnnfault_connect(const char *address, enum dnnfault_role role,
				const char *token, int timeout_ms,
				char *err, size_t err_len, int *errnum);

void dnnfault_close(dnnfault_conn *c);

/* Message for the last failure on this connection. */
const char *dnnfault_conn_error(const dnnfault_conn *c);

/* Opens a stream: picks a random stream id and sends RunStart with seq 1. */
int dnnfault_run_start(dnnfault_conn *c, const struct dnnfault_run_info *info,
		       struct dnnfault_stream *s);

/* Send one message of the stream; return the sequence number used (>0). */
int64_t dnnfault_send_step(dnnfault_conn *c, struct dnnfault_stream *s,
			   const struct dnnfault_step *step);
int64_t dnnfault_send_epoch(dnnfault_conn *c, struct dnnfault_stream *s,
			    const struct dnnfault_epoch *epoch);
int64_t dnnfault_send_run_end(dnnfault_conn *c, struct dnnfault_stream *s,
			      const struct dnnfault_run_end *end);

/* Reads what the daemon sent within timeout_ms (0: only what is there now,
 * -1: wait for at least one frame): acknowledgements advance acked_seq of
 * the matching stream in `streams`; an error reply is copied to *last_error
 * (when not NULL), and one that refuses a stream in `streams` marks it
 * `refused`. Returns the number of frames handled, or a negative
 * errno (-EPIPE when the daemon closed the connection). */
int dnnfault_poll(dnnfault_conn *c, struct dnnfault_stream *const *streams,
		  size_t n_streams, int timeout_ms,
		  struct dnnfault_reply_error *last_error);

/* Waits until every message sent on `s` is acknowledged. Returns 0, or
 * -ETIMEDOUT, or -EPROTO as soon as the stream is `refused` (already, or by
 * a reply read while waiting; the error names the refusal), or another
 * negative errno. */
int dnnfault_wait_acked(dnnfault_conn *c, struct dnnfault_stream *s, int timeout_ms);

const char *dnnfault_version(void);

/* ---- Asynchronous client: what a training loop uses ----
 *
 * Every call below except flush and close returns at once: messages are
 * encoded into a bounded in-memory queue that a background I/O thread sends
 * in batches. The thread connects (and reconnects with capped exponential
 * back-off), resends everything not yet acknowledged after a reconnect (the
 * daemon drops duplicates by sequence number), and removes messages from the
 * queue once acknowledged. When the queue is full the oldest unsent Step
 * messages are dropped to make room (RunStart, Epoch and RunEnd never are);
 * the drop count travels to the daemon in later steps and the run end, and
 * is readable in the stats. Nothing here blocks, raises signals or aborts
 * the caller. Thread-safe: any thread may call any function. */

typedef struct dnnfault_client dnnfault_client;

struct dnnfault_client_options {
	const char *address;		/* NULL: $DNNFAULT_ADDRESS or the default */
	const char *token;		/* NULL: $DNNFAULT_TOKEN or none */
	size_t queue_bytes;		/* bound of the queue; 0: 64 MiB */
	int connect_timeout_ms;		/* 0: 2000 */
	int backoff_initial_ms;		/* 0: 100 */
	int backoff_max_ms;		/* 0: 5000 */
};

struct dnnfault_client_stats {
	uint64_t queued;		/* messages accepted into the queue */
	uint64_t sent;			/* messages written (resends count again) */
	uint64_t acked;			/* messages acknowledged by the daemon */
	uint64_t dropped;		/* steps dropped because the queue was full */
	uint64_t rejected;		/* messages the daemon answered with an error */
	uint64_t reconnects;		/* connections made after the first one */
	uint64_t queue_bytes;		/* bytes queued now (sent or not, unacknowledged) */
	uint64_t queue_messages;
	bool connected;
	char last_error[256];		/* last connection or daemon error, or "" */
};

/* Creates the client and starts its I/O thread; the daemon does not need to
 * be running. Returns NULL only when out of memory or when the address
 * cannot be parsed (then errno is ENOMEM or EINVAL). */
dnnfault_client *dnnfault_client_new(const struct dnnfault_client_options *opts);

/* Queues a RunStart for a new stream and returns its id in *stream.
 * Returns 0, -EINVAL (no run_id, or too large to ever send), or -ENOMEM. */
int dnnfault_client_run_start(dnnfault_client *c, const struct dnnfault_run_info *info,
			      uint64_t *stream);

/* Queue one message of a stream opened by dnnfault_client_run_start.
 * Return 0, -ENOENT (unknown or ended stream), -EINVAL, or -ENOMEM. A full
 * queue is not an error: old steps are dropped (and counted) instead. */
int dnnfault_client_step(dnnfault_client *c, uint64_t stream, const struct dnnfault_step *step);
int dnnfault_client_epoch(dnnfault_client *c, uint64_t stream, const struct dnnfault_epoch *epoch);
int dnnfault_client_run_end(dnnfault_client *c, uint64_t stream, const struct dnnfault_run_end *end);

/* Waits until everything queued so far has left the queue: acknowledged,
 * rejected by the daemon, or dropped (the stats tell which). Returns 0, or
 * -ETIMEDOUT after timeout_ms (-1: no bound). */
int dnnfault_client_flush(dnnfault_client *c, int timeout_ms);

void dnnfault_client_stats(dnnfault_client *c, struct dnnfault_client_stats *out);

/* Flushes for at most timeout_ms, stops the thread and frees everything;
 * what was not acknowledged by then is lost (and counted in the log). */
void dnnfault_client_close(dnnfault_client *c, int timeout_ms);

/* Asks the daemon at `address` (NULL: as dnnfault_connect) for the status
 * of one run, by name or id, over a control connection. On success returns
 * 0 and stores in *json_out the run's JSON object exactly as `dnnfaultctl
 * --json status RUN` prints it in its "runs" array (malloc'd; free() it).
 * Otherwise *json_out is NULL and the return is -ENOENT (no such run),
 * -EINVAL (bad address, NULL run), -ENOMEM, -EACCES / -EPROTONOSUPPORT
 * (the daemon refused the connection), -EPROTO (any other answer by the
 * daemon, e.g. an ambiguous run name), or, when the daemon is unreachable,
 * -ECONNREFUSED (also for a missing socket), -ETIMEDOUT, -EPIPE,
 * -EHOSTUNREACH or another errno of connect(). */
int dnnfault_query_status(const char *address, const char *token, const char *run,
			  int timeout_ms, char **json_out);

/* ---- Statistics of tensors in host memory ----
 *
 * What the Python client uses for a model on the CPU: every reduction of a
 * sampled step in one call and one pass over each tensor, instead of
 * dozens of tensor-library calls that each cost more to launch than to run
 * on small layers. A span is one contiguous array of float32 or float64;
 * its sums go into the accumulator row of its layer. */

enum dnnfault_span_kind {
	DNNFAULT_SPAN_WEIGHT = 1,	/* sum, sum of squares, max |x|; (x - prev)² */
	DNNFAULT_SPAN_GRAD = 2,		/* sum, sum of squares, max |x|, zeros */
	DNNFAULT_SPAN_OUTPUT = 3,	/* sum, sum of squares, > 0, |x| > 5 */
	DNNFAULT_SPAN_INPUT = 4,	/* sum, sum of squares, min, max */
};
enum dnnfault_span_dtype { DNNFAULT_F32 = 1, DNNFAULT_F64 = 2 };

struct dnnfault_span {
	const void *data;
	const void *prev;	/* WEIGHT: the same weights before the update, or NULL */
	void *keep;		/* WEIGHT: where data is copied after it is read (may be
				 * prev itself), or NULL */
	uint64_t n;		/* elements */
	uint32_t row;		/* accumulator row */
	uint16_t kind;		/* enum dnnfault_span_kind */
	uint16_t dtype;		/* enum dnnfault_span_dtype; prev and keep have it too */
};

/* Accumulators of one row, in order (the Python layer's _stats.A_* follow
 * it). NAN and INF count the spans' non-finite values exactly (a second pass, only over a span whose sum of
 * squares is not finite); a max or min over a span with a NaN is NaN. */
enum dnnfault_acc {
	DNNFAULT_ACC_W_SUM, DNNFAULT_ACC_W_SQ, DNNFAULT_ACC_W_MAX_ABS, DNNFAULT_ACC_W_DIFF_SQ,
	DNNFAULT_ACC_G_SUM, DNNFAULT_ACC_G_SQ, DNNFAULT_ACC_G_MAX_ABS, DNNFAULT_ACC_G_ZERO,
	DNNFAULT_ACC_A_SUM, DNNFAULT_ACC_A_SQ, DNNFAULT_ACC_A_POS, DNNFAULT_ACC_A_SAT,
	DNNFAULT_ACC_NAN, DNNFAULT_ACC_INF, DNNFAULT_ACC_X_MIN, DNNFAULT_ACC_X_MAX,
	DNNFAULT_ACC_N
};

/* Sets acc[n_rows][DNNFAULT_ACC_N] to zero (min to +inf, max to -inf), then
 * adds every span into its row. Squares and sums of float32 data are taken
 * in float32 within blocks of DNNFAULT_REDUCE_BLOCK elements and added up
 * in double. Returns 0, or -EINVAL (a span with an unknown kind or dtype,
 * a row out of range, or NULL data with n > 0) before touching anything
 * but acc. */
#define DNNFAULT_REDUCE_BLOCK 2048
int dnnfault_reduce(const struct dnnfault_span *spans, size_t n_spans, double *acc, size_t n_rows);

/* Kinds of records of dnnfault_finish (the Python layer's _stats._WG, ...):
 * WG, a layer's (or chunk's) weights and gradients: sums of x, x² and the
 * mixed row for w and g interleaved, then min w, min g, max w, max g (10
 * values); W, weights alone: the three sums, min, max (5); OUT, an output:
 * the sums of x, x², x > 0, x² > 25 (4); COUNTS: pad NaN counts, then pad
 * Inf counts (2 * pad). */
enum dnnfault_record_kind {
	DNNFAULT_RECORD_WG, DNNFAULT_RECORD_W, DNNFAULT_RECORD_OUT, DNNFAULT_RECORD_COUNTS
};

/* The layer statistics of a sampled step whose sums the Python layer's
 * torch path computed on a device into one vector `raw` (n_raw values,
 * dtype DNNFAULT_F32 or DNNFAULT_F64). records: n_records quadruples
 * (kind, layer, offset of its first value in raw, pad: for WG the
 * gradient elements that were zeros for a missing gradient, for COUNTS
 * the counts of each kind). layers: n_layers quadruples (weight elements,
 * gradient elements, output elements, whether the weights' update was
 * recorded). work: 18 * n_layers doubles of scratch. Writes n_layers *
 * DNNFAULT_STATS_PER_LAYER floats to out, as dnnfault_step.layer_stats
 * has them (NaN for a layer without records). Returns 0; 1, writing
 * nothing, when a layer's sums of squares are not finite and not all of
 * its records had their NaN and Inf counted (the caller counts them from
 * the tensors); -EINVAL (a record of an unknown kind, out of raw or of the
 * layers, or a bad dtype; NULL raw, records, layers, work or out with a
 * count above 0) before writing anything. */
int dnnfault_finish(const void *raw, int dtype, size_t n_raw, const int64_t *records,
		    size_t n_records, const int64_t *layers, size_t n_layers, double *work,
		    float *out);

#ifdef __cplusplus
}
#endif

#endif
