#include "offload/pinned_pool.h"
