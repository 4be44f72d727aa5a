#include "address.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_str(char *dst, size_t cap, const char *src, size_t n)
{
	if (n == 0 || n >= cap)
		return -EINVAL;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
	if (*s == '\0')
		return -EINVAL;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

static int parse_host_port(const char *s, struct address *out)
{
	const char *colon;
	const char *host = s;
	size_t host_len;

	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || close[1] != ':')
			return -EINVAL;
		host = s + 1;
		host_len = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -EINVAL;
		host_len = (size_t)(colon - s);
	}
	out->kind = ADDRESS_TCP;
	if (copy_str(out->host, sizeof out->host, host, host_len) != 0)
		return -EINVAL;
	return parse_port(colon + 1, &out->port);
}

int address__parse(const char *text, struct address *out)
{
	memset(out, 0, sizeof *out);
	if (text == NULL || *text == '\0')
		return -EINVAL;
	if (strncmp(text, "unix:", 5) == 0) {
		out->kind = ADDRESS_UNIX;
		return copy_str(out->path, sizeof out->path, text + 5, strlen(text + 5));
	}
	if (strncmp(text, "tcp://", 6) == 0)
		return parse_host_port(text + 6, out);
	if (text[0] == '/' || text[0] == '.') {
		out->kind = ADDRESS_UNIX;
		return copy_str(out->path, sizeof out->path, text, strlen(text));
	}
	return parse_host_port(text, out);
}

void address__format(const struct address *a, char *buf, size_t len)
{
	if (a->kind == ADDRESS_UNIX)
		snprintf(buf, len, "unix:%s", a->path);
	else if (strchr(a->host, ':') != NULL)
		snprintf(buf, len, "tcp://[%s]:%u", a->host, a->port);
	else
		snprintf(buf, len, "tcp://%s:%u", a->host, a->port);
}

__attribute__((format(printf, 3, 4)))
static int fmt(char *buf, size_t len, const char *format, ...)
{
	va_list ap;
	va_start(ap, format);
	int n = vsnprintf(buf, len, format, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int address__runtime_dir(char *buf, size_t len)
{
	/* systemd sets RUNTIME_DIRECTORY from the unit's RuntimeDirectory=. */
	const char *sd = getenv("RUNTIME_DIRECTORY");
	if (sd != NULL && *sd != '\0' && strchr(sd, ':') == NULL)
		return fmt(buf, len, "%s", sd);
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (xdg != NULL && xdg[0] == '/')
		return fmt(buf, len, "%s/dnnfault", xdg);
	return fmt(buf, len, "/tmp/dnnfault-%u", (unsigned)getuid());
}

int address__default_socket(char *buf, size_t len)
{
	char dir[ADDRESS_PATH_MAX];
	int rv = address__runtime_dir(dir, sizeof dir);
	if (rv != 0)
		return rv;
	return fmt(buf, len, "%s/" ADDRESS_SOCKET_NAME, dir);
}

static bool is_socket(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

int address__client_default(struct address *out)
{
	const char *env = getenv(ADDRESS_ENV);
	if (env != NULL && *env != '\0')
		return address__parse(env, out);

	char user[ADDRESS_PATH_MAX];
	int rv = address__default_socket(user, sizeof user);
	if (rv != 0)
		return rv;
	const char *path = user;
	if (!is_socket(user) && is_socket(ADDRESS_SYSTEM_RUNTIME_DIR "/" ADDRESS_SOCKET_NAME))
		path = ADDRESS_SYSTEM_RUNTIME_DIR "/" ADDRESS_SOCKET_NAME;
	memset(out, 0, sizeof *out);
	out->kind = ADDRESS_UNIX;
	return copy_str(out->path, sizeof out->path, path, strlen(path));
}

bool address__is_loopback_host(const char *host)
{
	return strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 ||
	       strncmp(host, "127.", 4) == 0;
}
