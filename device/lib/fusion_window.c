#include "fusion_window.h"

#include <string.h>

int fusion_read_memory(void *context, size_t offset, size_t length, float *out) {
    if (context == NULL || out == NULL) {
        return -1;
    }
    memcpy(out, (const float *)context + offset, length * sizeof(float));
    return 0;
}
