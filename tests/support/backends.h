// PLACEHOLDER (the host-backend helper replaces this)
#pragma once
