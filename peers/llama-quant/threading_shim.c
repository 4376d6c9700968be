// ggml's critical section without C++: ggml-threading.cpp holds a std::mutex; this
// tool is single-threaded C, so a pthread mutex does the same job.
#include "ggml-threading.h"

#include <pthread.h>

static pthread_mutex_t critical_section = PTHREAD_MUTEX_INITIALIZER;

void ggml_critical_section_start(void) { pthread_mutex_lock(&critical_section); }

void ggml_critical_section_end(void) { pthread_mutex_unlock(&critical_section); }
