"""The daemon's default limits on a run's description, applied here.

dnnfaultd refuses a RunStart whose names are too long or hold control
characters, or that has too many tags (docs/protocol.md, validate.c), and
a refused RunStart loses the whole run. A run name is the user's to pick,
so rather than lose the run for it, watch() fits what it sends to the
defaults and says once what it changed. A daemon configured with lower
limits can still refuse the run; stats()["last_error"] then says why.
"""

MAX_NAME_BYTES = 256    # max_name_bytes
MAX_TAGS = 64           # max_tags, also for the optimizer's parameters
MAX_LAYERS = 4096       # max_layers


def name(value, what, notes):
    """value as a string the daemon takes: control characters replaced by
    '?', cut to MAX_NAME_BYTES of UTF-8 (at a character boundary)."""
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    clean = "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7f else ch for ch in s)
    if clean != s:
        notes.append("%s %r: control characters replaced by '?'" % (what, s[:40]))
    b = clean.encode("utf-8", "replace")
    if len(b) > MAX_NAME_BYTES:
        clean = b[:MAX_NAME_BYTES].decode("utf-8", "ignore")
        notes.append("%s %r...: cut to %d bytes" % (what, s[:40], MAX_NAME_BYTES))
    return clean


def pairs(items, what, notes):
    """[(key, value)] as strings the daemon takes: keys non-empty, at most
    MAX_TAGS pairs (the rest left out)."""
    out = []
    for k, v in items:
        k = name(k, what + " key", notes)
        if not k:
            notes.append("%s with an empty key left out" % what)
            continue
        out.append((k, v if isinstance(v, (bool, int, float)) else name("" if v is None else v,
                                                                        what + " value", notes)))
    if len(out) > MAX_TAGS:
        notes.append("%d %s: only the first %d kept" % (len(out), what, MAX_TAGS))
        out = out[:MAX_TAGS]
    return out


def tags(value):
    """watch()'s tags (a dict, an iterable of "key=value" or "key" strings,
    or one such string) as [(key, value)]."""
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (str, bytes)):
        value = [value]
    out = []
    for t in value:
        if isinstance(t, (tuple, list)) and len(t) == 2:
            out.append((t[0], t[1]))
            continue
        t = t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
        k, _, v = t.partition("=")
        out.append((k, v))
    return out


def fit(desc):
    """Fits the description dict of _describe.describe in place; returns
    what was changed, one line each."""
    notes = []
    for field in ("run_id", "run_name", "host", "framework", "framework_version", "loss_fn",
                  "optimizer"):
        desc[field] = name(desc.get(field), field, notes)
    ref = desc.get("reference")
    if ref is not None and name(ref, "reference", []) != ref:
        notes.append("reference %r...: no run can have that name; left out" % ref[:40])
        desc["reference"] = None
    for layer in desc.get("layers", []):
        for field in ("name", "type", "activation"):
            layer[field] = name(layer[field], "layer " + field, notes)
    desc["tags"] = pairs(desc.get("tags", []), "tags", notes)
    desc["optimizer_params"] = pairs(desc.get("optimizer_params", []), "optimizer parameters",
                                     notes)
    if len(desc.get("layers", [])) > MAX_LAYERS:
        notes.append("%d layers: dnnfaultd refuses runs of more than %d unless its max_layers "
                     "is raised" % (len(desc["layers"]), MAX_LAYERS))
    return notes
