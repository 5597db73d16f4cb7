// libzmq (Debian's libzmq3-dev).
#include <zmq.h>
