// zlib (Debian's zlib1g-dev), for HdrHistogram's compressed encoding.
#include <zlib.h>
