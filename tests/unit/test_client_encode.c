#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "encode.h"

static const struct encode_ctx ctx = {
	.stream = 0x1122334455667788ull, .seq = 7, .now = 1700000000.25,
	.max_payload = 1u << 20,
};

/* Checks the frame header against the buffer and decodes the payload. */
static Dnnfault__Envelope *decode(struct encode_frame *f,
				  Dnnfault__Envelope__BodyCase expect)
{
	assert_true(f->len > FRAME_HEADER_BYTES);
	assert_int_equal(frame__get_len(f->buf), f->len - FRAME_HEADER_BYTES);
	Dnnfault__Envelope *env = frame__decode(f->buf + FRAME_HEADER_BYTES,
						f->len - FRAME_HEADER_BYTES);
	assert_non_null(env);
	assert_int_equal(env->body_case, expect);
	encode__free(f);
	return env;
}

static void test_hello(void **state)
{
	(void)state;
	struct encode_frame f;
	assert_int_equal(encode__hello(DNNFAULT_ROLE_CONTROL, "dnnfault-c/9", "s3cret", &f), 0);
	Dnnfault__Envelope *env = decode(&f, DNNFAULT__ENVELOPE__BODY_HELLO);
	assert_int_equal(env->hello->protocol_version, PROTOCOL_VERSION);
	assert_int_equal(env->hello->role, DNNFAULT__ROLE__ROLE_CONTROL);
	assert_string_equal(env->hello->client, "dnnfault-c/9");
	assert_string_equal(env->hello->token, "s3cret");
	frame__free(env);

	assert_int_equal(encode__hello(DNNFAULT_ROLE_TRAINER, "c", NULL, &f), 0);
	env = decode(&f, DNNFAULT__ENVELOPE__BODY_HELLO);
	assert_null(env->hello->token);
	frame__free(env);
}

static void test_run_start_every_field(void **state)
{
	(void)state;
	const uint64_t wdims[] = {128, 784}, bdims[] = {128};
	const struct dnnfault_shape shapes[] = {{"weight", wdims, 2}, {"bias", bdims, 1}};
	const struct dnnfault_layer layers[] = {
		{"fc1", "Linear", "relu", 100480, 100000, false, shapes, 2},
		{"head", NULL, NULL, 0, 0, false, NULL, 0},
		{"stem", "Conv2d", NULL, 864, 0, true, NULL, 0},
	};
	const struct dnnfault_kv opt[] = {
		{"lr", NULL, 0.1, true}, {"nesterov", "true", 0, false},
	};
	const struct dnnfault_kv tags[] = {{"team", "vision", 0, false}};
	const char *const labels[] = {"lr_high", "init"};
	const struct dnnfault_run_info info = {
		.run_id = "run-1", .run_name = "mnist", .rank = 3, .world_size = 4,
		.host = "gpu7", .pid = 4242, .framework = "pytorch",
		.framework_version = "2.3.0", .task = DNNFAULT_TASK_CLASSIFICATION,
		.num_classes = 10, .layers = layers, .n_layers = 3, .loss_fn = "CrossEntropyLoss",
		.optimizer = "SGD", .optimizer_params = opt, .n_optimizer_params = 2,
		.batch_size = 64, .planned_epochs = 5, .planned_steps = 4690,
		.dataset_size = 60000, .tags = tags, .n_tags = 1, .labels = labels,
		.n_labels = 2, .labels_known = true, .reference = "mnist-yesterday",
	};
	struct encode_frame f;
	assert_int_equal(encode__run_start(&info, &ctx, &f), 0);
	Dnnfault__Envelope *env = decode(&f, DNNFAULT__ENVELOPE__BODY_RUN_START);
	const Dnnfault__RunStart *rs = env->run_start;
	assert_int_equal(rs->seq, 7);
	assert_true(rs->stream == ctx.stream);
	assert_string_equal(rs->run_id, "run-1");
	assert_string_equal(rs->run_name, "mnist");
	assert_string_equal(rs->reference, "mnist-yesterday");
	assert_true(rs->has_rank && rs->rank == 3);
	assert_true(rs->has_world_size && rs->world_size == 4);
	assert_string_equal(rs->host, "gpu7");
	assert_true(rs->has_pid && rs->pid == 4242);
	assert_string_equal(rs->framework, "pytorch");
	assert_string_equal(rs->framework_version, "2.3.0");
	assert_true(rs->has_task && rs->task == DNNFAULT__TASK_KIND__TASK_CLASSIFICATION);
	assert_true(rs->has_num_classes && rs->num_classes == 10);
	assert_string_equal(rs->loss_fn, "CrossEntropyLoss");
	assert_string_equal(rs->optimizer, "SGD");
	assert_true(rs->has_batch_size && rs->batch_size == 64);
	assert_true(rs->has_planned_epochs && rs->planned_epochs == 5);
	assert_true(rs->has_planned_steps && rs->planned_steps == 4690);
	assert_true(rs->has_dataset_size && rs->dataset_size == 60000);
	assert_true(rs->has_time && rs->time == ctx.now);

	assert_int_equal(rs->n_layers, 3);
	const Dnnfault__Layer *l = rs->layers[0];
	assert_string_equal(l->name, "fc1");
	assert_string_equal(l->type, "Linear");
	assert_string_equal(l->activation, "relu");
	assert_true(l->has_param_count && l->param_count == 100480);
	assert_true(l->has_trainable_count && l->trainable_count == 100000);
	assert_int_equal(l->n_params, 2);
	assert_string_equal(l->params[0]->name, "weight");
	assert_int_equal(l->params[0]->n_dims, 2);
	assert_int_equal(l->params[0]->dims[0], 128);
	assert_int_equal(l->params[0]->dims[1], 784);
	assert_string_equal(l->params[1]->name, "bias");
	assert_int_equal(l->params[1]->n_dims, 1);
	assert_int_equal(l->params[1]->dims[0], 128);
	l = rs->layers[1];
	assert_string_equal(l->name, "head");
	assert_null(l->type);
	assert_null(l->activation);
	assert_false(l->has_param_count);
	assert_false(l->has_trainable_count);
	assert_int_equal(l->n_params, 0);
	/* Frozen: a trainable count of 0 is sent, not left out. */
	l = rs->layers[2];
	assert_true(l->has_param_count && l->param_count == 864);
	assert_true(l->has_trainable_count && l->trainable_count == 0);

	assert_int_equal(rs->n_optimizer_params, 2);
	assert_string_equal(rs->optimizer_params[0]->key, "lr");
	assert_null(rs->optimizer_params[0]->value);
	assert_true(rs->optimizer_params[0]->has_number && rs->optimizer_params[0]->number == 0.1);
	assert_string_equal(rs->optimizer_params[1]->key, "nesterov");
	assert_string_equal(rs->optimizer_params[1]->value, "true");
	assert_false(rs->optimizer_params[1]->has_number);
	assert_int_equal(rs->n_tags, 1);
	assert_string_equal(rs->tags[0]->key, "team");
	assert_string_equal(rs->tags[0]->value, "vision");
	assert_int_equal(rs->n_labels, 2);
	assert_string_equal(rs->labels[0], "lr_high");
	assert_string_equal(rs->labels[1], "init");
	assert_true(rs->has_labels_known && rs->labels_known);
	frame__free(env);
}

static void test_run_start_minimal_leaves_optionals_absent(void **state)
{
	(void)state;
	const struct dnnfault_run_info info = {.run_id = "r"};
	struct encode_frame f;
	assert_int_equal(encode__run_start(&info, &ctx, &f), 0);
	Dnnfault__Envelope *env = decode(&f, DNNFAULT__ENVELOPE__BODY_RUN_START);
	const Dnnfault__RunStart *rs = env->run_start;
	assert_string_equal(rs->run_id, "r");
	assert_null(rs->reference);
	assert_null(rs->run_name);
	assert_null(rs->host);
	assert_null(rs->framework);
	assert_null(rs->loss_fn);
	assert_null(rs->optimizer);
	assert_true(rs->has_rank && rs->rank == 0);
	assert_false(rs->has_world_size);
	assert_int_equal(rs->world_size, 1);	/* the wire default */
	assert_false(rs->has_pid);
	assert_false(rs->has_task);
	assert_false(rs->has_num_classes);
	assert_false(rs->has_batch_size);
	assert_false(rs->has_planned_epochs);
	assert_false(rs->has_planned_steps);
	assert_false(rs->has_dataset_size);
	assert_int_equal(rs->n_layers, 0);
	assert_int_equal(rs->n_optimizer_params, 0);
	assert_int_equal(rs->n_tags, 0);
	assert_int_equal(rs->n_labels, 0);
	assert_false(rs->has_labels_known);
	frame__free(env);

	/* labels_known without labels says "healthy". */
	const struct dnnfault_run_info healthy = {.run_id = "r", .labels_known = true};
	assert_int_equal(encode__run_start(&healthy, &ctx, &f), 0);
	env = decode(&f, DNNFAULT__ENVELOPE__BODY_RUN_START);
	assert_true(env->run_start->has_labels_known && env->run_start->labels_known);
	assert_int_equal(env->run_start->n_labels, 0);
	frame__free(env);
}

static void test_run_start_rejects_broken_info(void **state)
{
	(void)state;
	struct encode_frame f;
	const struct dnnfault_run_info no_id = {.run_name = "x"};
	assert_int_equal(encode__run_start(&no_id, &ctx, &f), -EINVAL);
	const struct dnnfault_layer unnamed[] = {{.type = "Linear"}};
	const struct dnnfault_run_info bad_layer = {.run_id = "r", .layers = unnamed, .n_layers = 1};
	assert_int_equal(encode__run_start(&bad_layer, &ctx, &f), -EINVAL);
	const struct dnnfault_kv keyless[] = {{.value = "v"}};
	const struct dnnfault_run_info bad_tag = {.run_id = "r", .tags = keyless, .n_tags = 1};
	assert_int_equal(encode__run_start(&bad_tag, &ctx, &f), -EINVAL);
}

static bool same_bits(float a, float b)
{
	return memcmp(&a, &b, sizeof a) == 0;
}

static void test_step_every_field_and_non_finite(void **state)
{
	(void)state;
	float stats[2 * DNNFAULT_STATS_PER_LAYER];
	for (size_t i = 0; i < 2 * DNNFAULT_STATS_PER_LAYER; i++)
		stats[i] = (float)i * 0.5f - 3.0f;
	stats[DNNFAULT_GRAD_NORM] = NAN;
	stats[DNNFAULT_STATS_PER_LAYER + DNNFAULT_WEIGHT_MAX_ABS] = INFINITY;
	stats[DNNFAULT_STATS_PER_LAYER + DNNFAULT_ACT_MEAN] = -INFINITY;
	stats[5] = -0.0f;
	const struct dnnfault_step st = {
		.step = 1234, .time = 1699999999.5,
		.has = DNNFAULT_HAS_LOSS | DNNFAULT_HAS_ACCURACY | DNNFAULT_HAS_LR |
		       DNNFAULT_HAS_INPUT,
		.loss = NAN, .accuracy = 0.75, .lr = INFINITY,
		.input_mean = -0.5, .input_std = 1.5, .input_min = -INFINITY, .input_max = 2.8,
		.layer_stats = stats, .n_layers = 2, .dropped = 17,
	};
	struct encode_frame f;
	assert_int_equal(encode__step(&st, &ctx, &f), 0);
	Dnnfault__Envelope *env = decode(&f, DNNFAULT__ENVELOPE__BODY_STEP);
	const Dnnfault__Step *m = env->step;
	assert_int_equal(m->seq, 7);
	assert_true(m->stream == ctx.stream);
	assert_int_equal(m->step, 1234);
	assert_true(m->has_time && m->time == 1699999999.5);
	assert_true(m->has_loss && isnan(m->loss));
	assert_true(m->has_accuracy && m->accuracy == 0.75);
	assert_true(m->has_lr && isinf(m->lr) && m->lr > 0);
	assert_true(m->has_input_mean && m->input_mean == -0.5);
	assert_true(m->has_input_std && m->input_std == 1.5);
	assert_true(m->has_input_min && isinf(m->input_min) && m->input_min < 0);
	assert_true(m->has_input_max && m->input_max == 2.8);
	assert_true(m->has_dropped && m->dropped == 17);
	assert_int_equal(m->n_layer_stats, 2 * DNNFAULT_STATS_PER_LAYER);
	for (size_t i = 0; i < m->n_layer_stats; i++)
		assert_true(same_bits(m->layer_stats[i], stats[i]));
	frame__free(env);
}

static void test_step_absent_optionals_and_no_layers(void **state)
{
	(void)state;
	const struct dnnfault_step st = {.step = 3, .loss = 1.0, .accuracy = 2.0};
	struct encode_frame f;
	assert_int_equal(encode__step(&st, &ctx, &f), 0);
	Dnnfault__Envelope *env = decode(&f, DNNFAULT__ENVELOPE__BODY_STEP);
	const Dnnfault__Step *m = env->step;
	assert_int_equal(m->step, 3);
	assert_true(m->has_time && m->time == ctx.now);	/* 0 means now */
	assert_false(m->has_loss);
	assert_false(m->has_accuracy);
	assert_false(m->has_lr);
	assert_false(m->has_input_mean);
	assert_false(m->has_input_std);
	assert_false(m->has_input_min);
	assert_false(m->has_input_max);
	assert_int_equal(m->n_layer_stats, 0);
	frame__free(env);
}

static void test_step_rejects_and_limits(void **state)
{
	(void)state;
	struct encode_frame f;
	const struct dnnfault_step no_stats = {.step = 1, .n_layers = 3};
	assert_int_equal(encode__step(&no_stats, &ctx, &f), -EINVAL);

	static float big[100 * DNNFAULT_STATS_PER_LAYER];
	const struct dnnfault_step large = {.step = 1, .layer_stats = big, .n_layers = 100};
	struct encode_ctx small = ctx;
	small.max_payload = 1024;
	assert_int_equal(encode__step(&large, &small, &f), -EMSGSIZE);
}

static void test_epoch(void **state)
{
	(void)state;
	const struct dnnfault_epoch ep = {
		.epoch = 4, .step = 800, .has = DNNFAULT_HAS_TRAIN_LOSS | DNNFAULT_HAS_VAL_METRIC,
		.train_loss = 0.25, .train_metric = 9, .val_loss = 9, .val_metric = NAN,
	};
	struct encode_frame f;
	assert_int_equal(encode__epoch(&ep, &ctx, &f), 0);
	Dnnfault__Envelope *env = decode(&f, DNNFAULT__ENVELOPE__BODY_EPOCH);
	const Dnnfault__Epoch *m = env->epoch;
	assert_int_equal(m->seq, 7);
	assert_true(m->stream == ctx.stream);
	assert_int_equal(m->epoch, 4);
	assert_true(m->has_step && m->step == 800);
	assert_true(m->has_train_loss && m->train_loss == 0.25);
	assert_false(m->has_train_metric);
	assert_false(m->has_val_loss);
	assert_true(m->has_val_metric && isnan(m->val_metric));
	assert_true(m->has_time && m->time == ctx.now);
	frame__free(env);
}

static void test_run_end(void **state)
{
	(void)state;
	const struct dnnfault_run_end end = {
		.status = DNNFAULT_END_CRASHED, .step = 99,
		.has = DNNFAULT_HAS_TRAIN_METRIC | DNNFAULT_HAS_VAL_LOSS,
		.train_loss = 5, .train_metric = 0.5, .val_loss = INFINITY, .val_metric = 5,
		.dropped = 3,
	};
	struct encode_frame f;
	assert_int_equal(encode__run_end(&end, &ctx, &f), 0);
	Dnnfault__Envelope *env = decode(&f, DNNFAULT__ENVELOPE__BODY_RUN_END);
	const Dnnfault__RunEnd *m = env->run_end;
	assert_int_equal(m->seq, 7);
	assert_true(m->stream == ctx.stream);
	assert_int_equal(m->status, DNNFAULT__END_STATUS__END_CRASHED);
	assert_true(m->has_step && m->step == 99);
	assert_false(m->has_train_loss);
	assert_true(m->has_train_metric && m->train_metric == 0.5);
	assert_true(m->has_val_loss && isinf(m->val_loss));
	assert_false(m->has_val_metric);
	assert_true(m->has_dropped && m->dropped == 3);
	assert_true(m->has_time && m->time == ctx.now);
	frame__free(env);

	const struct dnnfault_run_end bad = {.status = 0};
	assert_int_equal(encode__run_end(&bad, &ctx, &f), -EINVAL);
}

static void test_stream_ids_nonzero_and_distinct(void **state)
{
	(void)state;
	uint64_t ids[32];
	for (size_t i = 0; i < 32; i++) {
		assert_int_equal(encode__stream_id(&ids[i]), 0);
		assert_true(ids[i] != 0);
		for (size_t k = 0; k < i; k++)
			assert_true(ids[i] != ids[k]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_run_start_every_field),
		cmocka_unit_test(test_run_start_minimal_leaves_optionals_absent),
		cmocka_unit_test(test_run_start_rejects_broken_info),
		cmocka_unit_test(test_step_every_field_and_non_finite),
		cmocka_unit_test(test_step_absent_optionals_and_no_layers),
		cmocka_unit_test(test_step_rejects_and_limits),
		cmocka_unit_test(test_epoch),
		cmocka_unit_test(test_run_end),
		cmocka_unit_test(test_stream_ids_nonzero_and_distinct),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
