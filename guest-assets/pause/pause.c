/*
 * coco-pause: the pod's sandbox container process. The agent forks it into
 * the pod's new pid, ipc and uts namespaces (or runc runs it as /pause).
 * It holds them until SIGTERM or SIGINT, reaping orphans meanwhile (it is
 * PID 1 of the pod's pid namespace when containers share it).
 *
 * It is C, not Go, because it is started on every pod's critical path: a
 * static C binary starts in microseconds, where a Go runtime takes ~150 ms
 * of guest CPU under TCG. It is built against musl (17 KB, a start that
 * does next to nothing) rather than glibc (680 KB; the static start-up
 * resolves ifuncs and sets up TLS and stdio it never uses).
 *
 * Once its handlers are in place it writes one byte to the file descriptor
 * named by COCO_PAUSE_READY_FD (when set): before that a SIGTERM would be
 * lost, as PID 1 ignores signals it has no handler for.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static void on_child(int sig)
{
	int saved = errno;

	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

int main(void)
{
	struct sigaction sa = {0};
	sigset_t handled, waiting;
	const char *ready;

	/* Block the signals until sigsuspend, so none arrives between the
	 * check of stopping and the wait. */
	sigemptyset(&handled);
	sigaddset(&handled, SIGTERM);
	sigaddset(&handled, SIGINT);
	sigaddset(&handled, SIGCHLD);
	sigprocmask(SIG_BLOCK, &handled, &waiting);
	sigdelset(&waiting, SIGTERM);
	sigdelset(&waiting, SIGINT);
	sigdelset(&waiting, SIGCHLD);

	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);

	ready = getenv("COCO_PAUSE_READY_FD");
	if (ready != NULL) {
		int fd = atoi(ready);

		if (fd > 2) {
			if (write(fd, "+", 1) != 1)
				return 1;
			close(fd);
		}
	}
	while (!stopping)
		sigsuspend(&waiting);
	return 0;
}
