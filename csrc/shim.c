/* C glue cffi cannot express: libbpf's print callback is variadic, so it is
 * formatted here and handed to Python (th_log_message, an extern "Python"). */
#include <stdarg.h>
#include <stdio.h>
#include <bpf/libbpf.h>

static void th_log_message(int level, const char *msg);

static int th_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char buf[4096];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	th_log_message((int)level, buf);
	return 0;
}

static void th_install_print(void)
{
	libbpf_set_print(th_libbpf_print);
}
