/* A stand-in for librknnrt.so on the arm64 test board (tests/board/README.md). Rockchip's real
 * library is in no package registry, so the board gets this one: it exports the functions that the
 * real rknn-toolkit-lite2 binds when it loads the library, and its rknn_init does what the real
 * librknnrt 2.x does on a board without the rknpu driver: it logs the two lines below and returns
 * RKNN_ERR_FAIL. The version string is the real 2.3.2 library's, found the way the board preflight
 * finds it (`strings librknnrt.so | grep "librknnrt version"`). Nothing here ever runs a model. */
#include <stdint.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#define RKNN_ERR_FAIL -1

__attribute__((used)) static const char version[] = "librknnrt version: 2.3.2 (429f97ae6b@2025-04-09T09:09:27)";

/* `E RKNN: [hh:mm:ss.mmm] message` on stderr, as librknnrt logs. */
static void log_error(const char *message) {
    struct timeval now;
    struct tm local;
    gettimeofday(&now, NULL);
    localtime_r(&now.tv_sec, &local);
    fprintf(stderr, "E RKNN: [%02d:%02d:%02d.%03ld] %s\n", local.tm_hour, local.tm_min, local.tm_sec,
            (long)(now.tv_usec / 1000), message);
}

int rknn_init(uint64_t *context, void *model, uint32_t size, uint32_t flag, void *extend) {
    log_error("failed to open rknpu module, need to insmod rknpu dirver!"); /* sic, as the real one */
    log_error("failed to open rknn device!");
    return RKNN_ERR_FAIL;
}

/* Bound by rknn-toolkit-lite2 when it loads the library; unreachable after a failed rknn_init. */
int rknn_destroy(uint64_t context) { return RKNN_ERR_FAIL; }
int rknn_query(uint64_t context, int cmd, void *info, uint32_t size) { return RKNN_ERR_FAIL; }
int rknn_inputs_set(uint64_t context, uint32_t n_inputs, void *inputs) { return RKNN_ERR_FAIL; }
int rknn_run(uint64_t context, void *extend) { return RKNN_ERR_FAIL; }
int rknn_outputs_get(uint64_t context, uint32_t n_outputs, void *outputs, void *extend) { return RKNN_ERR_FAIL; }
int rknn_outputs_release(uint64_t context, uint32_t n_outputs, void *outputs) { return RKNN_ERR_FAIL; }
int rknn_set_core_mask(uint64_t context, int core_mask) { return RKNN_ERR_FAIL; }
