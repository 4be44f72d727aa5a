#include "summary_json.h"

void summary_json__write(struct json *j, const Dnnfault__RunSummary *s)
{
	json__begin_object(j);
	json__kstring(j, "run", s->name);
	json__kstring(j, "id", s->id);
	json__kstring(j, "state", s->state);
	json__kopt_uint(j, "step", s->has_step, s->step);
	json__kstring(j, "health", s->health);
	json__kopt_double(j, "fault_probability", s->has_fault_probability, s->fault_probability);
	json__kopt_double(j, "shortfall", s->has_shortfall, s->shortfall);
	json__kopt_uint(j, "skipped_steps", s->has_skipped_steps, s->skipped_steps);
	json__key(j, "symptoms");
	json__begin_array(j);
	for (size_t i = 0; i < s->n_symptoms; i++) {
		const Dnnfault__Symptom *sym = s->symptoms[i];
		json__begin_object(j);
		json__kstring(j, "id", sym->id);
		json__kopt_uint(j, "first_step", sym->has_first_step, sym->first_step);
		json__kstring(j, "layer", sym->layer);
		json__end_object(j);
	}
	json__end_array(j);
	json__key(j, "causes");
	json__begin_array(j);
	for (size_t i = 0; i < s->n_causes; i++) {
		const Dnnfault__Cause *c = s->causes[i];
		json__begin_object(j);
		json__kstring(j, "id", c->id);
		json__kopt_double(j, "probability", c->has_probability, c->probability);
		json__kstring(j, "fix", c->fix);
		json__kstring(j, "layer", c->layer);
		json__end_object(j);
	}
	json__end_array(j);
	json__kopt_double(j, "started", s->has_started, s->started);
	json__kopt_double(j, "updated", s->has_updated, s->updated);
	json__kopt_uint(j, "world_size", s->has_world_size, s->world_size);
	json__kopt_uint(j, "ranks", s->has_ranks, s->ranks);
	json__kopt_uint(j, "steps_stored", s->has_steps_stored, s->steps_stored);
	json__kopt_uint(j, "dropped", s->has_dropped, s->dropped);
	json__kopt_uint(j, "diagnosed_step", s->has_diagnosed_step, s->diagnosed_step);
	json__key(j, "labels");
	if (s->has_labels_known && s->labels_known) {
		json__begin_array(j);
		for (size_t i = 0; i < s->n_labels; i++)
			json__string(j, s->labels[i]);
		json__end_array(j);
	} else {
		json__null(j);
	}
	if (s->reference != NULL && *s->reference != '\0')
		json__kstring(j, "reference", s->reference);
	json__end_object(j);
}
