/* Stand-in of libedgetpu.so.1 for tests on machines without an Edge TPU.
 *
 * It implements TFLite's external delegate plugin interface exactly as libedgetpu does
 * (tflite_plugin_create_delegate / tflite_plugin_destroy_delegate), so the real
 * ai_edge_litert.load_delegate path runs. Behaviour replays what the real runtime does:
 * - every key:value option it receives is appended to $EDGETPU_STANDIN_LOG ("key=value" lines);
 * - option device=usb:N with no such device (any N other than 0) returns NULL, as libedgetpu does when
 *   no Edge TPU is found, and load_delegate raises "Failed to load delegate from ...";
 * - option standin_crash=1 aborts inside the runtime (a crashing driver);
 * - otherwise the delegate claims no nodes, so the model runs on the CPU kernels.
 * Build: cc -shared -fPIC -o libedgetpu.so.1 edgetpu_standin.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  int (*CopyFromBufferHandle)(void* context, struct TfLiteDelegate* delegate, int handle, void* tensor);
  int (*CopyToBufferHandle)(void* context, struct TfLiteDelegate* delegate, int handle, void* tensor);
  void (*FreeBufferHandle)(void* context, struct TfLiteDelegate* delegate, int* handle);
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

static int Prepare(void* context, TfLiteDelegate* delegate) {
  (void)context;
  (void)delegate;
  return 0; /* kTfLiteOk: no node replaced */
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t num_options,
                                              void (*report_error)(const char*)) {
  const char* log_path = getenv("EDGETPU_STANDIN_LOG");
  FILE* log = log_path ? fopen(log_path, "a") : NULL;
  int missing_device = 0;
  for (size_t i = 0; i < num_options; ++i) {
    if (log) fprintf(log, "%s=%s\n", keys[i], values[i]);
    if (strcmp(keys[i], "device") == 0 && strcmp(values[i], "usb:0") != 0 &&
        strcmp(values[i], "pci:0") != 0) missing_device = 1;
    if (strcmp(keys[i], "standin_crash") == 0) {
      if (log) fclose(log);
      abort();
    }
  }
  if (log) fclose(log);
  if (missing_device) return NULL;
  (void)report_error;
  TfLiteDelegate* delegate = (TfLiteDelegate*)calloc(1, sizeof(TfLiteDelegate));
  delegate->Prepare = Prepare;
  return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) { free(delegate); }
