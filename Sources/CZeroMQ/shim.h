// libzmq (Debian's libzmq3-dev), and epoll, with which ZeroMQSocketSet waits on the ZMQ_FD of
// thousands of sockets (Swift's Glibc module does not include <sys/epoll.h>).
#include <sys/epoll.h>
#include <zmq.h>
