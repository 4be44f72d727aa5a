/* An open-addressing hash map from nonzero uint64 keys to pointers. The map
 * does not own the values. */
#ifndef DNNFAULT_MAP_H
#define DNNFAULT_MAP_H

#include <stddef.h>
#include <stdint.h>

struct map_slot {
	uint64_t key;		/* 0: empty; MAP_TOMBSTONE: deleted */
	void *value;
};

struct map {
	struct map_slot *slots;
	size_t cap;		/* power of two, or 0 */
	size_t used;		/* live entries */
	size_t filled;		/* live entries + tombstones */
};

void map__init(struct map *m);
void map__free(struct map *m);

void *map__get(const struct map *m, uint64_t key);

/* Inserts or replaces. Returns 0 or -ENOMEM. */
int map__put(struct map *m, uint64_t key, void *value);

/* Removes the key; returns its value or NULL. */
void *map__del(struct map *m, uint64_t key);

/* Iteration: start with *pos = 0; returns NULL when done. */
void *map__next(const struct map *m, size_t *pos, uint64_t *key);

/* 64-bit FNV-1a of a string, never 0 (for string keys). */
uint64_t map__hash_str(const char *s);

#endif
