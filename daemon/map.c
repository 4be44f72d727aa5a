#include "map.h"

#include <errno.h>
#include <stdlib.h>

#define MAP_TOMBSTONE UINT64_MAX

void map__init(struct map *m)
{
	m->slots = NULL;
	m->cap = m->used = m->filled = 0;
}

void map__free(struct map *m)
{
	free(m->slots);
	map__init(m);
}

static size_t slot_of(uint64_t key, size_t cap)
{
	/* Stream ids are random, but run-id hashes and test keys may not be. */
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdULL;
	key ^= key >> 33;
	return (size_t)key & (cap - 1);
}

static struct map_slot *find(const struct map *m, uint64_t key)
{
	if (m->cap == 0)
		return NULL;
	for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		struct map_slot *s = &m->slots[i];
		if (s->key == key)
			return s;
		if (s->key == 0)
			return NULL;
	}
}

void *map__get(const struct map *m, uint64_t key)
{
	struct map_slot *s = find(m, key);
	return s ? s->value : NULL;
}

static int grow(struct map *m)
{
	size_t cap = m->cap ? m->cap : 16;
	while ((m->used + 1) * 2 > cap)
		cap *= 2;
	struct map_slot *slots = calloc(cap, sizeof *slots);
	if (slots == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		struct map_slot *old = &m->slots[i];
		if (old->key == 0 || old->key == MAP_TOMBSTONE)
			continue;
		size_t j = slot_of(old->key, cap);
		while (slots[j].key != 0)
			j = (j + 1) & (cap - 1);
		slots[j] = *old;
	}
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	m->filled = m->used;
	return 0;
}

int map__put(struct map *m, uint64_t key, void *value)
{
	struct map_slot *s = find(m, key);
	if (s != NULL) {
		s->value = value;
		return 0;
	}
	/* Keep at most 3/4 of the slots non-empty so probes stay short. */
	if ((m->filled + 1) * 4 > m->cap * 3 && grow(m) != 0)
		return -ENOMEM;
	size_t i = slot_of(key, m->cap);
	while (m->slots[i].key != 0 && m->slots[i].key != MAP_TOMBSTONE)
		i = (i + 1) & (m->cap - 1);
	if (m->slots[i].key == 0)
		m->filled++;
	m->slots[i].key = key;
	m->slots[i].value = value;
	m->used++;
	return 0;
}

void *map__del(struct map *m, uint64_t key)
{
	struct map_slot *s = find(m, key);
	if (s == NULL)
		return NULL;
	void *v = s->value;
	s->key = MAP_TOMBSTONE;
	s->value = NULL;
	m->used--;
	return v;
}

void *map__next(const struct map *m, size_t *pos, uint64_t *key)
{
	for (; *pos < m->cap; (*pos)++) {
		struct map_slot *s = &m->slots[*pos];
		if (s->key != 0 && s->key != MAP_TOMBSTONE) {
			(*pos)++;
			if (key != NULL)
				*key = s->key;
			return s->value;
		}
	}
	return NULL;
}

uint64_t map__hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h == 0 || h == MAP_TOMBSTONE ? 1 : h;
}
