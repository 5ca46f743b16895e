#include "tests/support/backends.h"
