/* Validation of telemetry: table-driven cases of absurd and malformed fields. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "validate.h"

#define OK 0
#define INVALID DNNFAULT__ERROR_CODE__ERR_INVALID_FIELD
#define LIMIT DNNFAULT__ERROR_CODE__ERR_LIMIT

static const struct validate_limits limits = {
	.max_layers = 8, .max_name_bytes = 32, .max_tags = 2, .max_world_size = 16,
};

static char long_name[64];
static char control_name[] = "bad\nname";

static Dnnfault__Layer layer_ok = {PROTOBUF_C_MESSAGE_INIT(&dnnfault__layer__descriptor), "fc1",
				   "Linear", "relu", 0, 0, 0, 0, 0, NULL};
static Dnnfault__Layer layer_unnamed = {PROTOBUF_C_MESSAGE_INIT(&dnnfault__layer__descriptor), "",
					NULL, NULL, 0, 0, 0, 0, 0, NULL};
static Dnnfault__Layer layer_surrogate = {PROTOBUF_C_MESSAGE_INIT(&dnnfault__layer__descriptor),
					  "fc\xed\xa0\x80", NULL, NULL, 0, 0, 0, 0, 0, NULL};

static void base_run_start(Dnnfault__RunStart *m)
{
	dnnfault__run_start__init(m);
	m->seq = 1;
	m->stream = 99;
	m->run_id = "run-1";
}

struct run_start_case {
	const char *what;
	void (*mutate)(Dnnfault__RunStart *m);
	int want;
};

static Dnnfault__Layer *layers[10];
static char *labels_bad[] = {"lr_high", "not_a_cause"};
static char *labels_ok[] = {"lr_high", "init"};
static Dnnfault__KeyValue kv = {PROTOBUF_C_MESSAGE_INIT(&dnnfault__key_value__descriptor), "k", "v", 0, 0};
static Dnnfault__KeyValue *kvs[] = {&kv, &kv, &kv};
static Dnnfault__KeyValue kv_cut_value = {PROTOBUF_C_MESSAGE_INIT(&dnnfault__key_value__descriptor), "lr\xe2\x82",
					  "v", 0, 0};
static Dnnfault__KeyValue *kv_cut = &kv_cut_value;

static void m_none(Dnnfault__RunStart *m) { (void)m; }
static void m_stream0(Dnnfault__RunStart *m) { m->stream = 0; }
static void m_stream_max(Dnnfault__RunStart *m) { m->stream = UINT64_MAX; }
static void m_seq0(Dnnfault__RunStart *m) { m->seq = 0; }
static void m_no_id(Dnnfault__RunStart *m) { m->run_id = ""; }
static void m_long_id(Dnnfault__RunStart *m) { m->run_id = long_name; }
static void m_ctrl_name(Dnnfault__RunStart *m) { m->run_name = control_name; }
static void m_utf8_name(Dnnfault__RunStart *m) { m->run_name = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\xa5"; }
static void m_latin1_id(Dnnfault__RunStart *m) { m->run_id = "caf\xe9"; }
static void m_overlong_name(Dnnfault__RunStart *m) { m->run_name = "a\xc0\xaf" "b"; }
static void m_surrogate_layer(Dnnfault__RunStart *m) { layers[9] = &layer_surrogate; m->n_layers = 1; m->layers = &layers[9]; }
static void m_cut_tag(Dnnfault__RunStart *m) { m->n_tags = 1; m->tags = &kv_cut; }
static void m_world0(Dnnfault__RunStart *m) { m->world_size = 0; }
static void m_world_big(Dnnfault__RunStart *m) { m->world_size = 17; }
static void m_rank(Dnnfault__RunStart *m) { m->world_size = 4; m->rank = 4; }
static void m_layers_ok(Dnnfault__RunStart *m) { m->n_layers = 8; m->layers = layers; }
static void m_layers_many(Dnnfault__RunStart *m) { m->n_layers = 9; m->layers = layers; }
static void m_layers_million(Dnnfault__RunStart *m) { m->n_layers = 1000000; m->layers = layers; }
static void m_layer_unnamed(Dnnfault__RunStart *m) { layers[9] = &layer_unnamed; m->n_layers = 1; m->layers = &layers[9]; }
static void m_labels_bad(Dnnfault__RunStart *m) { m->n_labels = 2; m->labels = labels_bad; }
static void m_labels_ok(Dnnfault__RunStart *m) { m->n_labels = 2; m->labels = labels_ok; }
static void m_tags_many(Dnnfault__RunStart *m) { m->n_tags = 3; m->tags = kvs; }
static void m_tags_ok(Dnnfault__RunStart *m) { m->n_tags = 2; m->tags = kvs; }
static void m_time_nan(Dnnfault__RunStart *m) { m->has_time = 1; m->time = NAN; }
static void m_time_neg(Dnnfault__RunStart *m) { m->has_time = 1; m->time = -5; }
static void m_classes(Dnnfault__RunStart *m) { m->num_classes = 2000000000u; }
static void m_reference(Dnnfault__RunStart *m) { m->reference = "yesterday"; }
static void m_reference_empty(Dnnfault__RunStart *m) { m->reference = ""; }
static void m_reference_long(Dnnfault__RunStart *m) { m->reference = long_name; }
static void m_reference_ctrl(Dnnfault__RunStart *m) { m->reference = control_name; }

static void run_start_cases(void **state)
{
	(void)state;
	memset(long_name, 'x', 40);
	long_name[40] = '\0';
	for (int i = 0; i < 10; i++)
		layers[i] = &layer_ok;
	const struct run_start_case cases[] = {
		{"valid", m_none, OK},
		{"stream 0", m_stream0, INVALID},
		{"stream all ones", m_stream_max, INVALID},
		{"seq 0", m_seq0, INVALID},
		{"empty run id", m_no_id, INVALID},
		{"long run id", m_long_id, LIMIT},
		{"control char in name", m_ctrl_name, INVALID},
		{"UTF-8 name", m_utf8_name, OK},
		{"Latin-1 run id", m_latin1_id, INVALID},
		{"overlong UTF-8 in name", m_overlong_name, INVALID},
		{"surrogate in a layer name", m_surrogate_layer, INVALID},
		{"tag key cut inside a character", m_cut_tag, INVALID},
		{"world size 0", m_world0, LIMIT},
		{"world size over limit", m_world_big, LIMIT},
		{"rank >= world size", m_rank, INVALID},
		{"8 layers", m_layers_ok, OK},
		{"9 layers", m_layers_many, LIMIT},
		{"10^6 layers", m_layers_million, LIMIT},
		{"unnamed layer", m_layer_unnamed, INVALID},
		{"unknown label", m_labels_bad, INVALID},
		{"known labels", m_labels_ok, OK},
		{"too many tags", m_tags_many, LIMIT},
		{"tags at limit", m_tags_ok, OK},
		{"NaN time", m_time_nan, INVALID},
		{"negative time", m_time_neg, INVALID},
		{"absurd classes", m_classes, INVALID},
		{"reference", m_reference, OK},
		{"empty reference (none)", m_reference_empty, OK},
		{"long reference", m_reference_long, LIMIT},
		{"control char in reference", m_reference_ctrl, INVALID},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		Dnnfault__RunStart m;
		char why[256] = "";
		base_run_start(&m);
		cases[i].mutate(&m);
		int got = validate__run_start(&m, &limits, why, sizeof why);
		if (got != cases[i].want)
			fail_msg("%s: got %d (%s), want %d", cases[i].what, got, why, cases[i].want);
		if (got != OK && why[0] == '\0')
			fail_msg("%s: no reason given", cases[i].what);
	}
}

/* The reference of a ReferenceRequest follows the same rules, and the
 * reason names the field. */
static void reference(void **state)
{
	(void)state;
	char why[256] = "";
	memset(long_name, 'x', 40);
	long_name[40] = '\0';
	assert_int_equal(validate__reference(NULL, &limits, why, sizeof why), OK);
	assert_int_equal(validate__reference("", &limits, why, sizeof why), OK);
	assert_int_equal(validate__reference("r-1", &limits, why, sizeof why), OK);
	long_name[32] = '\0';
	assert_int_equal(validate__reference(long_name, &limits, why, sizeof why), OK);
	long_name[32] = 'x';
	assert_int_equal(validate__reference(long_name, &limits, why, sizeof why), LIMIT);
	assert_string_equal(why, "reference longer than 32 bytes");
	assert_int_equal(validate__reference(control_name, &limits, why, sizeof why), INVALID);
	assert_string_equal(why, "reference contains a control character");
	assert_int_equal(validate__reference("ref\xff", &limits, why, sizeof why), INVALID);
	assert_string_equal(why, "reference is not valid UTF-8 (byte 3)");
}

static void step_cases(void **state)
{
	(void)state;
	float stats[16 * 9] = {0};
	stats[0] = NAN;
	stats[1] = INFINITY;
	struct {
		const char *what;
		size_t n_stats;
		uint64_t step;
		uint32_t declared;
		int want;
	} cases[] = {
		{"2 layers as declared, NaN/Inf values", 32, 10, 2, OK},
		{"no layer data", 0, 10, 2, OK},
		{"not a multiple of 16", 33, 10, 2, INVALID},
		{"other layer count than declared", 48, 10, 2, INVALID},
		{"more layers than the limit", 16 * 9, 10, 9, LIMIT},
		{"absurd step", 0, UINT64_MAX, 0, INVALID},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		Dnnfault__Step m = DNNFAULT__STEP__INIT;
		char why[256] = "";
		m.seq = 2;
		m.stream = 5;
		m.step = cases[i].step;
		m.has_loss = 1;
		m.loss = NAN;
		m.n_layer_stats = cases[i].n_stats;
		m.layer_stats = stats;
		int got = validate__step(&m, cases[i].declared, &limits, why, sizeof why);
		if (got != cases[i].want)
			fail_msg("%s: got %d (%s), want %d", cases[i].what, got, why, cases[i].want);
	}
}

static void epoch_and_end(void **state)
{
	(void)state;
	char why[256];
	Dnnfault__Epoch e = DNNFAULT__EPOCH__INIT;
	e.seq = 3;
	e.stream = 5;
	e.epoch = 2;
	e.has_val_loss = 1;
	e.val_loss = INFINITY;
	assert_int_equal(validate__epoch(&e, why, sizeof why), OK);
	e.epoch = 4000000000u;
	assert_int_equal(validate__epoch(&e, why, sizeof why), INVALID);

	Dnnfault__RunEnd r = DNNFAULT__RUN_END__INIT;
	r.seq = 4;
	r.stream = 5;
	r.status = DNNFAULT__END_STATUS__END_CRASHED;
	assert_int_equal(validate__run_end(&r, why, sizeof why), OK);
	r.status = (Dnnfault__EndStatus)42;
	assert_int_equal(validate__run_end(&r, why, sizeof why), INVALID);
	r.status = DNNFAULT__END_STATUS__END_UNKNOWN;
	assert_int_equal(validate__run_end(&r, why, sizeof why), INVALID);
}

static void causes(void **state)
{
	(void)state;
	const char *all[] = {"lr_high", "lr_low", "loss", "activation", "init", "optimizer",
			     "epochs", "batch_size", "data", "labels", "regularization"};
	for (size_t i = 0; i < 11; i++)
		assert_true(validate__is_cause(all[i]));
	assert_false(validate__is_cause("healthy"));
	assert_false(validate__is_cause("LR_HIGH"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(run_start_cases),
		cmocka_unit_test(reference),
		cmocka_unit_test(step_cases),
		cmocka_unit_test(epoch_and_end),
		cmocka_unit_test(causes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
