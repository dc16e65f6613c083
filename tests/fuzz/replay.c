/* main() for the fuzz targets without libFuzzer: replays every file given
 * (directories are walked one level deep) through LLVMFuzzerTestOneInput.
 * `make fuzz-regress` runs it over the seed corpus and the regression
 * inputs with the normal compiler, so `make test` needs no libFuzzer.
 * A path that does not exist, or a run that replays no input at all, is a
 * failure: a renamed or emptied corpus must not turn into a silent pass
 * (the Makefile passes a regression directory only when it exists). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replayed;

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f) {
		fprintf(stderr, "replay: cannot open %s\n", path);
		return -1;
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
		fprintf(stderr, "replay: cannot read %s\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	/* an exact-size copy, as libFuzzer gives: overreads are caught */
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	free(buf);
	replayed++;
	return 0;
}

static int replay_dir(const char *dir)
{
	struct dirent **names;
	char path[4096];
	int n = scandir(dir, &names, NULL, alphasort), rc = 0;

	if (n < 0) {
		fprintf(stderr, "replay: cannot list %s\n", dir);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		struct stat st;

		snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
		if (names[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
		    replay_file(path) < 0)
			rc = -1;
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	const char *name;
	int rc = 0;

	LLVMFuzzerInitialize(&argc, &argv);
	/* every log line is formatted, so format bugs show on these inputs
	 * (the Makefile sends stderr to a file and shows it on failure) */
	log_level = LOG_TRACE;
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			rc = 1;
			continue;
		}
		if ((S_ISDIR(st.st_mode) ? replay_dir(argv[i]) : replay_file(argv[i])) < 0)
			rc = 1;
	}
	name = strrchr(argv[0], '/');
	printf("%-20s %d inputs replayed\n", name ? name + 1 : argv[0], replayed);
	if (!replayed) {
		fprintf(stderr, "replay: no input replayed: that is a failure, not a pass\n");
		rc = 1;
	}
	return rc;
}
