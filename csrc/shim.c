/* C glue cffi cannot express: libbpf's print callback is variadic, so it is
 * formatted here and handed to Python (th_log_message, an extern "Python"). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <bpf/libbpf.h>

static void th_log_message(int level, const char *msg);

static int th_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char small[1024];
	va_list again;
	int n;

	va_copy(again, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n >= 0 && (size_t)n < sizeof(small)) {
		th_log_message((int)level, small);
	} else if (n >= 0) {
		/* verifier logs arrive as one message of up to megabytes: keep it whole */
		char *big = malloc((size_t)n + 1);

		if (big) {
			vsnprintf(big, (size_t)n + 1, fmt, again);
			th_log_message((int)level, big);
			free(big);
		}
	}
	va_end(again);
	return 0;
}

static void th_install_print(void)
{
	libbpf_set_print(th_libbpf_print);
}
