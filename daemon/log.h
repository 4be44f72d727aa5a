/* Log lines go to stderr; under systemd the journal picks them up and the
 * "<N>" priority prefix (sd-daemon(3)) sets their level. */
#ifndef DNNFAULT_LOG_H
#define DNNFAULT_LOG_H

enum log_level { LOG_LEVEL_ERROR = 3, LOG_LEVEL_WARNING = 4, LOG_LEVEL_INFO = 6, LOG_LEVEL_DEBUG = 7 };

void log__init(enum log_level level);
enum log_level log__level(void);

__attribute__((format(printf, 2, 3)))
void log__write(enum log_level level, const char *fmt, ...);

#define log_error(...) log__write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log__write(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log__write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) \
	do { if (log__level() >= LOG_LEVEL_DEBUG) log__write(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)

#endif
