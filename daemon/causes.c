#include "causes.h"

#include <errno.h>
#include <string.h>

static const struct {
	const char *name, *fix;
	bool layer;
} table[CAUSE_COUNT] = {
#define CAUSE_ROW(id, layer_specific, fix_text) [CAUSE_##id] = {#id, fix_text, layer_specific},
	CAUSES(CAUSE_ROW)
#undef CAUSE_ROW
};

const char *causes__name(enum cause_id id)
{
	return (unsigned)id < CAUSE_COUNT ? table[id].name : "?";
}

const char *causes__fix(enum cause_id id)
{
	return (unsigned)id < CAUSE_COUNT ? table[id].fix : "";
}

bool causes__layer_specific(enum cause_id id)
{
	return (unsigned)id < CAUSE_COUNT && table[id].layer;
}

int causes__find(const char *name)
{
	for (int i = 0; i < CAUSE_COUNT; i++)
		if (strcmp(table[i].name, name) == 0)
			return i;
	return -1;
}

int causes__parse(const char *list, cause_set *out)
{
	*out = 0;
	while (list != NULL && *list != '\0') {
		const char *end = strchr(list, ',');
		size_t len = end ? (size_t)(end - list) : strlen(list);
		int found = -1;
		for (int i = 0; i < CAUSE_COUNT && found < 0; i++)
			if (strlen(table[i].name) == len && strncmp(table[i].name, list, len) == 0)
				found = i;
		if (found < 0 && len > 0)
			return -EINVAL;
		if (found >= 0)
			*out |= (cause_set)1 << found;
		list = end ? end + 1 : NULL;
	}
	return 0;
}
